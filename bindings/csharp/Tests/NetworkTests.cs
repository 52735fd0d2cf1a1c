// NetworkTests.cs: seats from a license server. The fixture starts tessera-server on a free
// loopback port, hosting the software containers of the licensed TESSERA_HOME, and stops it
// at the end.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Threading;
using NUnit.Framework;

namespace Tessera.Tests
{
    [TestFixture]
    public class NetworkTests
    {
        const string ServerName = "cs-test-server";
        Process server;
        string dir;
        string address;
        readonly StringBuilder log = new StringBuilder();

        static int FreePort()
        {
            var l = new TcpListener(IPAddress.Loopback, 0);
            l.Start();
            int port = ((IPEndPoint)l.LocalEndpoint).Port;
            l.Stop();
            return port;
        }

        [TestFixtureSetUp]
        public void StartServer()
        {
            dir = TestEnv.TempDir();
            Directory.CreateDirectory(Path.Combine(dir, "state"));
            address = "127.0.0.1:" + FreePort();
            var psi = new ProcessStartInfo(Path.Combine(TestEnv.BinDir, "tessera-server"),
                string.Format("--name {0} --listen {1} --admin-listen 127.0.0.1:0 --home \"{2}\" --state-dir \"{3}\" --no-discovery --no-dongles",
                              ServerName, address, TestEnv.Home, Path.Combine(dir, "state")))
            {
                UseShellExecute = false,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            psi.EnvironmentVariables["TESSERA_DISCOVERY"] = "off";
            var listening = new ManualResetEvent(false);
            try
            {
                server = Process.Start(psi);
                // scripts/test-csharp.sh stops it by this pid should this process die first.
                string pidFile = Environment.GetEnvironmentVariable("TESSERA_TEST_PIDFILE");
                if (!string.IsNullOrEmpty(pidFile))
                    File.AppendAllText(pidFile, server.Id + "\n");
                DataReceivedEventHandler collect = (o, e) =>
                {
                    if (e.Data == null) return;
                    lock (log) log.AppendLine(e.Data);
                    if (e.Data.StartsWith("listening on")) listening.Set();
                };
                server.OutputDataReceived += collect;
                server.ErrorDataReceived += collect;
                server.BeginOutputReadLine();
                server.BeginErrorReadLine();
                if (!listening.WaitOne(TimeSpan.FromSeconds(30)))
                    Assert.Fail("tessera-server did not start:\n" + log);
            }
            catch
            {
                StopServer();
                throw;
            }
        }

        [TestFixtureTearDown]
        public void StopServer()
        {
            if (server != null)
            {
                if (!server.HasExited) server.Kill();
                server.WaitForExit();
                server.Dispose();
            }
            server = null;
            if (dir != null) Directory.Delete(dir, true);
            dir = null;
        }

        Session OpenNetworkOnly()
        {
            return Session.Open(new SessionOptions(Demo.VendorId, Demo.PublisherKey)
            {
                Sources = Sources.Network,
                Servers = address,
                Timeout = TimeSpan.FromSeconds(5),
            });
        }

        [Test]
        public void BorrowingALicenseThatDoesNotLendIsRefusedAndNothingIsBorrowedToReturn()
        {
            // The licensed home's licenses have no borrow_days: the server refuses to lend.
            using (Session s = Session.Open(new SessionOptions(Demo.VendorId, Demo.PublisherKey)
            {
                Sources = Sources.Software | Sources.Network,
                Servers = address,
                Timeout = TimeSpan.FromSeconds(5),
            }))
            {
                var e = Assert.Throws<NoLicenseException>(() => s.Borrow(Products.SingleSeat, 1));
                StringAssert.Contains("borrow", e.Message, log.ToString());
                Assert.Throws<InvalidArgumentException>(() => s.Borrow(Products.SingleSeat, 0));
                Assert.Throws<NoLicenseException>(() => s.ReturnBorrowed(Products.SingleSeat));
                foreach (LicenseInfo l in s.Licenses())
                {
                    Assert.IsFalse(l.Borrowed, l.ToString());
                    Assert.AreEqual(0UL, l.BorrowedUntilUnixSeconds, l.ToString());
                }
                // Nothing was counted: the single seat is free.
                using (Seat seat = s.Acquire(Products.SingleSeat))
                    Assert.IsFalse(seat.Info.Borrowed);
                s.Close();
                Assert.Throws<ObjectDisposedException>(() => s.Borrow(Products.SingleSeat, 1));
                Assert.Throws<ObjectDisposedException>(() => s.ReturnBorrowed(Products.SingleSeat));
            }
        }

        [Test]
        public void ASeatComesFromTheServerNamedInTheOptions()
        {
            using (Session s = OpenNetworkOnly())
            using (Seat seat = s.Acquire(Products.SingleSeat))
            {
                SeatInfo info = seat.Info;
                Assert.AreEqual(Sources.Network, info.Source, log.ToString());
                Assert.AreEqual(ServerName, info.Server);
                Assert.AreEqual(Products.SingleSeat, info.ProductCode);
                Assert.AreEqual(1u, info.SeatsInUse);
                byte[] data = Encoding.UTF8.GetBytes("over the network");
                foreach (CryptMode mode in new[] { CryptMode.Derived, CryptMode.Direct })
                {
                    byte[] ct = seat.Encrypt(data, mode);
                    CollectionAssert.AreEqual(data, seat.Decrypt(ct));
                    ct[ct.Length - 1] ^= 1;
                    Assert.Throws<TamperedException>(() => seat.Decrypt(ct));
                }
                // The server counts: its single seat is taken.
                using (Session other = OpenNetworkOnly())
                    Assert.Throws<NoSeatException>(() => other.Acquire(Products.SingleSeat).Dispose());
            }
            // Released on the server too.
            using (Session s = OpenNetworkOnly())
            using (Seat seat = s.Acquire(Products.SingleSeat))
                Assert.AreEqual(Sources.Network, seat.Info.Source);
        }

        [Test]
        public void TheServerListsItsLicensesWithItsOwnCount()
        {
            using (Session s = OpenNetworkOnly())
            {
                var listed = new Dictionary<uint, LicenseInfo>();
                foreach (LicenseInfo l in s.Licenses()) listed[l.ProductCode] = l;
                foreach (uint p in new[] { Products.Demo, Products.SingleSeat, Products.Basic })
                {
                    Assert.IsTrue(listed.ContainsKey(p), "product " + p + " is not listed: " + log);
                    LicenseInfo l = listed[p];
                    Assert.AreEqual(Sources.Network, l.Source);
                    Assert.AreEqual(ServerName, l.Server);
                    Assert.AreEqual(ContainerKind.Software, l.ContainerKind);
                    Assert.AreEqual(Status.Ok, l.Status);
                    StringAssert.StartsWith("SW-", l.ContainerSerial);
                }
                Assert.AreEqual(10u, listed[Products.Basic].Quantity);
                Assert.IsTrue(listed[Products.Demo].ExclusiveAllowed);
                using (Seat seat = s.Acquire(Products.SingleSeat))
                {
                    foreach (LicenseInfo l in s.Licenses())
                        if (l.ProductCode == Products.SingleSeat)
                            Assert.AreEqual(1u, l.SeatsInUse, "the server's count");
                }
                foreach (LicenseInfo l in s.Licenses())
                    if (l.ProductCode == Products.SingleSeat)
                        Assert.AreEqual(0u, l.SeatsInUse, "released on the server");
            }
        }

        [Test]
        public void AWaitForANetworkSeatEndsWhenItIsReleased()
        {
            using (Session one = OpenNetworkOnly())
            using (Session two = OpenNetworkOnly())
            {
                Seat held = one.Acquire(Products.SingleSeat);
                Assert.Throws<NoSeatException>(() => two.AcquireWait(Products.SingleSeat, TimeSpan.FromMilliseconds(200)).Dispose());
                Seat got = null;
                Exception failed = null;
                var waiter = new Thread(() =>
                {
                    try { got = two.AcquireWait(Products.SingleSeat, TimeSpan.FromMinutes(1)); }
                    catch (Exception e) { failed = e; }
                });
                waiter.Start();
                held.Dispose();
                Assert.IsTrue(waiter.Join(TimeSpan.FromMinutes(2)));
                Assert.IsNull(failed, failed == null ? "" : failed.ToString());
                using (got)
                    Assert.AreEqual(Sources.Network, got.Info.Source);
            }
        }

        [Test]
        public void TheQuickstartRunsAgainstTheServerUnchanged()
        {
            string home = Path.Combine(dir, "client-home-" + Guid.NewGuid().ToString("N"));
            Directory.CreateDirectory(home);
            ProcessResult r = TestEnv.Run("mono", "\"" + Path.Combine(TestEnv.OutDir, "Quickstart.exe") + "\"",
                new Dictionary<string, string> { { "TESSERA_HOME", home }, { "TESSERA_SERVERS", address } });
            Assert.AreEqual(0, r.ExitCode, r.ToString());
            StringAssert.Contains("through license server " + ServerName, r.Stdout);
            StringAssert.Contains("quickstart: all steps succeeded", r.Stdout);
        }

        [Test]
        public void NoServerListeningMeansNoLicense()
        {
            var o = new SessionOptions(Demo.VendorId, Demo.PublisherKey)
            {
                Sources = Sources.Network,
                Servers = "127.0.0.1:" + FreePort(),
                Timeout = TimeSpan.FromSeconds(2),
            };
            using (Session s = Session.Open(o))
            {
                var e = Assert.Catch<TesseraException>(() => s.Acquire(Products.Demo).Dispose());
                Assert.That(e.Status, Is.EqualTo(Status.NoLicense).Or.EqualTo(Status.Io).Or.EqualTo(Status.Timeout),
                            e.Message);
                Assert.IsNotEmpty(e.Detail);
                // Listing needs the server too.
                var l = Assert.Catch<TesseraException>(() => s.Licenses());
                Assert.That(l.Status, Is.EqualTo(Status.Io).Or.EqualTo(Status.Timeout), l.Message);
                Assert.AreEqual("tessera_license_list", l.Call);
            }
        }
    }
}
