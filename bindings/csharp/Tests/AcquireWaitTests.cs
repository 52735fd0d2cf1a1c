// AcquireWaitTests.cs: Session.AcquireWait (tessera_acquire_wait) for a seat that other
// processes (SeatHolder.exe children), or other threads of this one, hold.
//
// Durations are only ever checked from below: a wait that ends with NO_SEAT lasted at least
// its timeout, and a seat freed at a moment cannot be had before it. Nothing asserts that
// anything is fast.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Threading;
using NUnit.Framework;

namespace Tessera.Tests
{
    /// <summary>A child mono process holding a seat until its stdin closes; disposing it kills
    /// the child if it still runs, so a failing test leaves none behind.</summary>
    sealed class Holder : IDisposable
    {
        readonly Process p;

        /// <summary>What the child said: "held N" or "refused STATUS".</summary>
        public readonly string Said;

        public Holder(uint product, bool exclusive = false)
        {
            var psi = new ProcessStartInfo("mono", string.Format("\"{0}\" {1}{2}",
                Path.Combine(TestEnv.OutDir, "SeatHolder.exe"), product, exclusive ? " exclusive" : ""))
            {
                UseShellExecute = false,
                RedirectStandardInput = true,
                RedirectStandardOutput = true,
            };
            p = Process.Start(psi);
            // scripts/test-csharp.sh kills it by this pid should this process die first.
            string pidFile = Environment.GetEnvironmentVariable("TESSERA_TEST_PIDFILE");
            if (!string.IsNullOrEmpty(pidFile))
                File.AppendAllText(pidFile, p.Id + "\n");
            Said = p.StandardOutput.ReadLine();
        }

        /// <summary>Closes the child's stdin and waits for it to exit: the kernel frees its seat.</summary>
        public void LetGo()
        {
            p.StandardInput.Close();
            Assert.IsTrue(p.WaitForExit(60000), "the holder did not exit");
            Assert.AreEqual(0, p.ExitCode, "the holder's exit code");
        }

        public bool IsRunning { get { return !p.HasExited; } }

        public void Dispose()
        {
            try
            {
                if (!p.HasExited)
                {
                    p.Kill();
                    p.WaitForExit();
                }
            }
            catch (InvalidOperationException) { }   // it exited meanwhile
            p.Dispose();
        }
    }

    [TestFixture]
    public class AcquireWaitTests
    {
        [Test]
        public void AWaitForASeatAnotherProcessHoldsTimesOut()
        {
            using (var holder = new Holder(Products.SingleSeat))
            using (Session s = TestEnv.Open())
            {
                Assert.AreEqual("held 1", holder.Said);
                Assert.Throws<NoSeatException>(() => s.Acquire(Products.SingleSeat).Dispose());
                var once = Assert.Throws<NoSeatException>(() => s.AcquireWait(Products.SingleSeat, TimeSpan.Zero).Dispose());
                Assert.AreEqual("tessera_acquire_wait", once.Call);

                TimeSpan timeout = TimeSpan.FromMilliseconds(300);
                Stopwatch clock = Stopwatch.StartNew();
                var e = Assert.Throws<NoSeatException>(() => s.AcquireWait(Products.SingleSeat, timeout).Dispose());
                TimeSpan waited = clock.Elapsed;
                Assert.That(waited, Is.GreaterThanOrEqualTo(timeout), "gave up before its timeout");
                Assert.AreEqual(Status.NoSeat, e.Status);
                Assert.AreEqual("tessera_acquire_wait", e.Call);
                Assert.IsNotEmpty(e.Detail, "the library's detail of the last try");

                Assert.IsTrue(holder.IsRunning, "the holder still has its seat");
                holder.LetGo();
                using (Seat seat = s.Acquire(Products.SingleSeat))
                    Assert.AreEqual(1u, seat.Info.SeatsInUse);
            }
        }

        [Test]
        public void AWaitEndsWithTheSeatWhenAHolderLetsGo()
        {
            // Product 1 has 2 seats per process: two children hold both. A wait times out; then
            // one child lets go 0.2 s into a wait of a minute, and the waiter gets its seat.
            using (var first = new Holder(Products.Demo))
            using (var second = new Holder(Products.Demo))
            using (Session s = TestEnv.Open())
            {
                Assert.AreEqual("held 1", first.Said);
                Assert.AreEqual("held 2", second.Said);
                Assert.Throws<NoSeatException>(() => s.AcquireWait(Products.Demo, TimeSpan.FromMilliseconds(100)).Dispose());

                Seat got = null;
                Exception failed = null;
                Stopwatch clock = Stopwatch.StartNew();
                var waiter = new Thread(() =>
                {
                    try { got = s.AcquireWait(Products.Demo, TimeSpan.FromMinutes(1)); }
                    catch (Exception ex) { failed = ex; }
                });
                waiter.Start();
                Thread.Sleep(200);
                TimeSpan freedAt = clock.Elapsed;
                first.LetGo();
                Assert.IsTrue(waiter.Join(TimeSpan.FromMinutes(2)), "the wait did not end when a seat came free");
                TimeSpan waited = clock.Elapsed;
                Assert.IsNull(failed, failed == null ? "" : failed.ToString());
                Assert.IsNotNull(got);
                using (got)
                {
                    Assert.That(waited, Is.GreaterThanOrEqualTo(freedAt), "it cannot have had the seat before it was free");
                    SeatInfo info = got.Info;
                    Assert.AreEqual(Products.Demo, info.ProductCode);
                    Assert.AreEqual(2u, info.SeatsInUse);
                    byte[] data = { 1, 2, 3 };
                    CollectionAssert.AreEqual(data, got.Decrypt(got.Encrypt(data)));
                }
            }
        }

        [Test]
        public void AWaitForALicenseHeldExclusively()
        {
            using (var holder = new Holder(Products.Demo, exclusive: true))
            using (Session s = TestEnv.Open())
            {
                Assert.AreEqual("held 1", holder.Said);
                TimeSpan timeout = TimeSpan.FromMilliseconds(200);
                Stopwatch clock = Stopwatch.StartNew();
                Assert.Throws<ExclusiveDeniedException>(() => s.AcquireWait(Products.Demo, timeout).Dispose());
                Assert.That(clock.Elapsed, Is.GreaterThanOrEqualTo(timeout));
                holder.LetGo();
                using (Seat seat = s.AcquireWait(Products.Demo, TimeSpan.FromSeconds(30), 0, AcquireFlags.Exclusive))
                    Assert.IsTrue(seat.Info.Exclusive);
            }
        }

        [Test]
        public void AnyOtherAnswerEndsTheWaitAtOnce()
        {
            // Waiting cannot help an unlicensed product or a missing feature: the wait of an hour
            // ends with the first answer (on a thread, so that one that does not end fails the
            // test instead of hanging the suite).
            // Software containers only: a dongle of another publisher plugged into the machine
            // would answer WRONG_VENDOR instead of NO_LICENSE.
            var answers = new List<Exception>();
            using (Session s = Session.Open(new SessionOptions(Demo.VendorId, Demo.PublisherKey) { Sources = Sources.Software }))
            {
                var t = new Thread(() =>
                {
                    try { s.AcquireWait(Products.Unlicensed, TimeSpan.FromHours(1)).Dispose(); }
                    catch (Exception e) { answers.Add(e); }
                    try { s.AcquireWait(Products.Basic, TimeSpan.FromHours(1), 0x2).Dispose(); }
                    catch (Exception e) { answers.Add(e); }
                });
                t.IsBackground = true;
                t.Start();
                Assert.IsTrue(t.Join(TimeSpan.FromMinutes(2)), "a wait for an unlicensed product did not end");
            }
            Assert.AreEqual(2, answers.Count, string.Join("\n", answers));
            Assert.IsInstanceOf<NoLicenseException>(answers[0], answers[0].ToString());
            Assert.IsInstanceOf<FeatureMissingException>(answers[1], answers[1].ToString());
        }

        [Test]
        public void OtherThreadsUseTheSessionWhileOneWaits()
        {
            // This session holds the single seat of product 2 and another thread waits for one;
            // meanwhile this thread encrypts with another seat of the same session, then lets go
            // of product 2: the waiter gets it.
            using (Session s = TestEnv.Open())
            {
                Seat held = s.Acquire(Products.SingleSeat);
                Seat got = null;
                Exception failed = null;
                var waiter = new Thread(() =>
                {
                    try { got = s.AcquireWait(Products.SingleSeat, TimeSpan.FromMinutes(1)); }
                    catch (Exception ex) { failed = ex; }
                });
                waiter.Start();
                using (Seat other = s.Acquire(Products.Basic))
                    for (int i = 0; i < 20; i++)
                    {
                        byte[] data = BitConverter.GetBytes(i);
                        CollectionAssert.AreEqual(data, other.Decrypt(other.Encrypt(data)));
                    }
                Assert.IsNull(Volatile.Read(ref got), "the waiter got the single seat while it was held");
                held.Dispose();
                Assert.IsTrue(waiter.Join(TimeSpan.FromMinutes(2)));
                Assert.IsNull(failed, failed == null ? "" : failed.ToString());
                using (got)
                    Assert.AreEqual(1u, got.Info.SeatsInUse);
            }
        }

        [Test]
        public void TimeoutsThatAreNoWaitAreRefused()
        {
            using (Session s = TestEnv.Open())
            {
                foreach (TimeSpan bad in new[] { TimeSpan.FromTicks(-1), TimeSpan.FromSeconds(-1),
                                                 TimeSpan.FromMilliseconds(uint.MaxValue + 1.0), TimeSpan.MaxValue })
                {
                    var e = Assert.Throws<ArgumentOutOfRangeException>(() => s.AcquireWait(Products.Basic, bad).Dispose());
                    Assert.AreEqual("timeout", e.ParamName);
                }
                // The longest and the shortest waits are taken (a tick rounds up to 1 ms); a seat is
                // free, so each returns at once.
                foreach (TimeSpan ok in new[] { TimeSpan.Zero, TimeSpan.FromTicks(1), TimeSpan.FromMilliseconds(uint.MaxValue) })
                    using (Seat seat = s.AcquireWait(Products.Basic, ok))
                        Assert.AreEqual(Products.Basic, seat.Info.ProductCode);
                var flags = Assert.Throws<InvalidArgumentException>(
                    () => s.AcquireWait(Products.Basic, TimeSpan.FromSeconds(1), 0, (AcquireFlags)0x80).Dispose());
                Assert.AreEqual("tessera_acquire_wait", flags.Call);
                StringAssert.Contains("flags", flags.Detail);
            }
        }
    }
}
