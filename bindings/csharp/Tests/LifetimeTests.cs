// LifetimeTests.cs: who releases what, when: Dispose, using blocks that throw, a session
// closed under its seats, and the SafeHandle finalizers for what the app forgot.
using System;
using System.Runtime.CompilerServices;
using System.Threading;
using NUnit.Framework;

namespace Tessera.Tests
{
    [TestFixture]
    public class LifetimeTests
    {
        [Test]
        public void UsingADisposedSessionThrowsObjectDisposed()
        {
            Session s = TestEnv.Open();
            s.Dispose();
            Assert.IsTrue(s.IsClosed);
            Assert.IsTrue(s.Handle.IsClosed);
            Assert.Throws<ObjectDisposedException>(() => s.Acquire(Products.Demo));
            Assert.Throws<ObjectDisposedException>(() => s.ActivationRequest());
            Assert.Throws<ObjectDisposedException>(() => s.ActivationInstall(new byte[1]));
            Assert.Throws<ObjectDisposedException>(() => s.AcquireWait(Products.Demo, TimeSpan.FromSeconds(1)));
            Assert.Throws<ObjectDisposedException>(() => s.Licenses());
            Assert.DoesNotThrow(() => s.Dispose(), "disposing twice is harmless");
            Assert.DoesNotThrow(() => s.Close());
        }

        [Test]
        public void UsingAReleasedSeatThrowsObjectDisposed()
        {
            using (Session s = TestEnv.Open())
            {
                Seat seat = s.Acquire(Products.SingleSeat);
                byte[] ct = seat.Encrypt(new byte[] { 1, 2, 3 });
                seat.Release();
                Assert.IsTrue(seat.IsReleased);
                Assert.Throws<ObjectDisposedException>(() => seat.Encrypt(new byte[1]));
                Assert.Throws<ObjectDisposedException>(() => seat.Decrypt(ct));
                Assert.Throws<ObjectDisposedException>(() => { var i = seat.Info; });
                Assert.DoesNotThrow(() => seat.Release(), "releasing twice is harmless");
                Assert.DoesNotThrow(() => seat.Dispose());
                // Released for real: the single seat can be taken again.
                using (Seat again = s.Acquire(Products.SingleSeat))
                    Assert.AreEqual(1u, again.Info.SeatsInUse);
            }
        }

        [Test]
        public void ClosingTheSessionReleasesItsSeats()
        {
            Session s = TestEnv.Open();
            Seat seat = s.Acquire(Products.SingleSeat);
            ulong value = seat.Handle.Value;
            s.Close();
            Assert.IsTrue(seat.IsReleased);
            Assert.Throws<ObjectDisposedException>(() => seat.Encrypt(new byte[1]));
            Assert.Throws<ObjectDisposedException>(() => { var i = seat.Info; });
            Assert.AreEqual(Status.InvalidHandle, NativeMethods.tessera_release(value), "the library released it");
            Assert.DoesNotThrow(() => seat.Dispose(), "releasing a seat its session released is harmless");
            using (Session other = TestEnv.Open())
            using (Seat again = other.Acquire(Products.SingleSeat))
                Assert.AreEqual(Products.SingleSeat, again.Info.ProductCode);
        }

        [Test]
        public void ASeatIsReleasedWhenItsUsingBlockThrows()
        {
            using (Session s = TestEnv.Open())
            {
                Seat inside = null;
                Assert.Throws<InvalidOperationException>(() =>
                {
                    using (Seat seat = s.Acquire(Products.SingleSeat))
                    {
                        inside = seat;
                        Assert.Throws<NoSeatException>(() => s.Acquire(Products.SingleSeat).Dispose(), "held");
                        throw new InvalidOperationException("the app fails while holding the seat");
                    }
                });
                Assert.IsNotNull(inside);
                Assert.IsTrue(inside.IsReleased);
                using (Seat again = s.Acquire(Products.SingleSeat))
                    Assert.AreEqual(1u, again.Info.SeatsInUse);
            }
        }

        // Acquires on a thread of its own that ends, so no stack slot of this thread (Mono scans
        // stacks conservatively) keeps the forgotten seat alive.
        static void AcquireAndForget(Func<Seat> acquire)
        {
            // Start from an empty nursery, so that no collection is due (and finalizes the
            // forgotten seat) before the test has checked that the seat is still held.
            GC.Collect();
            GC.WaitForPendingFinalizers();
            Exception failure = null;
            var t = new Thread(() =>
            {
                try { acquire(); } catch (Exception e) { failure = e; }
            });
            t.Start();
            t.Join();
            if (failure != null) throw new AssertionException("acquire failed: " + failure);
        }

        static bool FreeAfterCollecting(Session s, uint product)
        {
            for (int i = 0; i < 20; i++)
            {
                GC.Collect();
                GC.WaitForPendingFinalizers();
                try
                {
                    s.Acquire(product).Dispose();
                    return true;
                }
                catch (NoSeatException)
                {
                    Thread.Sleep(50);
                }
            }
            return false;
        }

        [Test]
        public void AForgottenSeatIsReleasedByItsFinalizer()
        {
            using (Session s = TestEnv.Open())
            {
                AcquireAndForget(() => s.Acquire(Products.SingleSeat));
                Assert.Throws<NoSeatException>(() => s.Acquire(Products.SingleSeat).Dispose(),
                                               "the forgotten seat is still held before a collection");
                Assert.IsTrue(FreeAfterCollecting(s, Products.SingleSeat),
                              "the SafeHandle finalizer released the seat");
            }
        }

        [Test]
        public void AForgottenSessionIsClosedByItsFinalizerWithItsSeats()
        {
            AcquireAndForget(() => TestEnv.Open().Acquire(Products.SingleSeat));
            using (Session s = TestEnv.Open())
            {
                Assert.Throws<NoSeatException>(() => s.Acquire(Products.SingleSeat).Dispose(),
                                               "the forgotten seat is still held before a collection");
                Assert.IsTrue(FreeAfterCollecting(s, Products.SingleSeat),
                              "the finalizers closed the session and released its seat");
            }
        }

        [Test]
        public void AHeldSeatKeepsItsForgottenSessionOpen()
        {
            Seat seat = null;
            var t = new Thread(() => { seat = TestEnv.Open().Acquire(Products.SingleSeat); });
            t.Start();
            t.Join();
            GC.Collect();
            GC.WaitForPendingFinalizers();
            GC.Collect();
            Assert.IsFalse(seat.IsReleased, "the seat's session was not collected under it");
            Assert.AreEqual(3, seat.Decrypt(seat.Encrypt(new byte[3])).Length);
            seat.Session.Dispose();
            Assert.IsTrue(seat.IsReleased);
        }
    }
}
