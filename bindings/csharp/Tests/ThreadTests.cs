// ThreadTests.cs: many threads acquiring and releasing at once never hold more seats than
// the license quantity; a seat is shared by threads and disposed under them without harm.
using System;
using System.Collections.Generic;
using System.Threading;
using NUnit.Framework;

namespace Tessera.Tests
{
    [TestFixture]
    public class ThreadTests
    {
        static void RunThreads(int n, Action<int> body)
        {
            var failures = new List<Exception>();
            var threads = new Thread[n];
            for (int i = 0; i < n; i++)
            {
                int id = i;
                threads[i] = new Thread(() =>
                {
                    try { body(id); }
                    catch (Exception e) { lock (failures) failures.Add(e); }
                });
                threads[i].Start();
            }
            foreach (Thread t in threads) t.Join();
            Assert.IsEmpty(failures, string.Join("\n---\n", failures));
        }

        // All threads try at the same moment and hold until all have tried: exactly the
        // quantity succeeds, every round.
        void ExactlyTheQuantityPerRound(bool sessionPerThread)
        {
            const int threads = 16, rounds = 5, quantity = 10;
            var granted = new int[rounds];
            var refused = new int[rounds];
            var inUse = new uint[rounds];
            var barrier = new Barrier(threads);
            Session shared = sessionPerThread ? null : TestEnv.Open();
            try
            {
                RunThreads(threads, id =>
                {
                    Session s = shared ?? TestEnv.Open();
                    try
                    {
                        for (int r = 0; r < rounds; r++)
                        {
                            Seat seat = null;
                            try
                            {
                                seat = s.Acquire(Products.Basic);
                                Interlocked.Increment(ref granted[r]);
                            }
                            catch (NoSeatException)
                            {
                                Interlocked.Increment(ref refused[r]);
                            }
                            barrier.SignalAndWait();       // everyone has tried; holders hold
                            if (seat != null)
                            {
                                uint n = seat.Info.SeatsInUse;
                                lock (inUse) inUse[r] = Math.Max(inUse[r], n);
                                seat.Dispose();
                            }
                            barrier.SignalAndWait();       // everyone has released
                        }
                    }
                    finally
                    {
                        if (shared == null) s.Dispose();
                    }
                });
            }
            finally
            {
                if (shared != null) shared.Dispose();
            }
            for (int r = 0; r < rounds; r++)
            {
                Assert.AreEqual(quantity, granted[r], "round " + r + " granted");
                Assert.AreEqual(threads - quantity, refused[r], "round " + r + " refused");
                Assert.AreEqual((uint)quantity, inUse[r], "round " + r + " seats in use");
            }
        }

        [Test]
        public void ExactlyTheQuantityIsGrantedToThreadsOfOneSession()
        {
            ExactlyTheQuantityPerRound(false);
        }

        [Test]
        public void ExactlyTheQuantityIsGrantedToThreadsWithSessionsOfTheirOwn()
        {
            ExactlyTheQuantityPerRound(true);
        }

        // Free-running acquire/hold/release churn: the seats held at any moment, counted by the
        // holders themselves, never exceed the quantity.
        void Churn(uint product, int quantity, int threads, int iterations)
        {
            int held = 0, maxHeld = 0, granted = 0, refused = 0;
            using (Session s = TestEnv.Open())
            {
                RunThreads(threads, id =>
                {
                    var rnd = new Random(id * 7919);
                    for (int i = 0; i < iterations; i++)
                    {
                        Seat seat;
                        try
                        {
                            seat = s.Acquire(product);
                        }
                        catch (NoSeatException)
                        {
                            Interlocked.Increment(ref refused);
                            continue;
                        }
                        using (seat)
                        {
                            int now = Interlocked.Increment(ref held);
                            Interlocked.Increment(ref granted);
                            int seen;
                            while (now > (seen = maxHeld) && Interlocked.CompareExchange(ref maxHeld, now, seen) != seen) { }
                            uint inUse = seat.Info.SeatsInUse;
                            if (inUse > quantity)
                                throw new AssertionException("seats_in_use " + inUse + " > " + quantity);
                            Thread.Sleep(rnd.Next(0, 3));
                            Interlocked.Decrement(ref held);
                        }
                    }
                });
            }
            Assert.That(maxHeld, Is.LessThanOrEqualTo(quantity), "seats held at once");
            Assert.That(maxHeld, Is.GreaterThanOrEqualTo(1));
            Assert.That(granted, Is.GreaterThan(0));
            Assert.AreEqual(threads * iterations, granted + refused);
        }

        [Test]
        public void ChurnOnASingleSeatNeverHoldsTwo()
        {
            Churn(Products.SingleSeat, 1, 12, 40);
        }

        [Test]
        public void ChurnOnTenSeatsNeverHoldsEleven()
        {
            Churn(Products.Basic, 10, 24, 30);
        }

        [Test]
        public void ThreadsShareOneSeat()
        {
            using (Session s = TestEnv.Open())
            using (Seat seat = s.Acquire(Products.Demo))
            {
                RunThreads(8, id =>
                {
                    var rnd = new Random(id);
                    for (int i = 0; i < 50; i++)
                    {
                        var data = new byte[rnd.Next(0, 2000)];
                        rnd.NextBytes(data);
                        CryptMode mode = i % 2 == 0 ? CryptMode.Derived : CryptMode.Direct;
                        CollectionAssert.AreEqual(data, seat.Decrypt(seat.Encrypt(data, mode)));
                    }
                });
            }
        }

        [Test]
        public void ASeatDisposedUnderBusyThreadsFailsCleanly()
        {
            using (Session s = TestEnv.Open())
            {
                Seat seat = s.Acquire(Products.SingleSeat);
                int ok = 0, disposed = 0;
                var started = new CountdownEvent(6);
                var threads = new List<Thread>();
                var failures = new List<Exception>();
                for (int t = 0; t < 6; t++)
                {
                    var th = new Thread(() =>
                    {
                        started.Signal();
                        // A deadline on the monotonic clock: a wall clock set while
                        // the test runs moves neither end of it.
                        var elapsed = System.Diagnostics.Stopwatch.StartNew();
                        while (elapsed.Elapsed < TimeSpan.FromSeconds(30))
                        {
                            try
                            {
                                seat.Encrypt(new byte[16]);
                                Interlocked.Increment(ref ok);
                            }
                            catch (ObjectDisposedException) { Interlocked.Increment(ref disposed); break; }
                            catch (InvalidHandleException) { Interlocked.Increment(ref disposed); break; }
                            catch (Exception e) { lock (failures) failures.Add(e); break; }
                        }
                    });
                    threads.Add(th);
                    th.Start();
                }
                started.Wait();
                Thread.Sleep(20);
                seat.Dispose();
                foreach (Thread th in threads) th.Join();
                Assert.IsEmpty(failures, string.Join("\n", failures));
                Assert.That(ok, Is.GreaterThan(0));
                Assert.AreEqual(6, disposed, "every thread saw the release, none crashed");
                using (Seat again = s.Acquire(Products.SingleSeat))
                    Assert.IsFalse(again.IsReleased);
            }
        }
    }
}
