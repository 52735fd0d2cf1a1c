// LicenseListTests.cs: Session.Licenses() (tessera_license_list) against the licensed home and
// homes made for one test, and the binding's size-query loop.
using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using NUnit.Framework;

namespace Tessera.Tests
{
    // Sessions here look at software containers only: the lists are exact, and a dongle of
    // another publisher that happens to be plugged into the machine would otherwise be listed,
    // or be the failure an empty home answers.
    [TestFixture]
    public class LicenseListTests
    {
        static Session OpenSoftware(byte[] key = null)
        {
            return Session.Open(new SessionOptions(Demo.VendorId, key ?? Demo.PublisherKey) { Sources = Sources.Software });
        }

        static Dictionary<uint, LicenseInfo> ByProduct(Session s)
        {
            IReadOnlyList<LicenseInfo> listed = s.Licenses();
            var d = new Dictionary<uint, LicenseInfo>();
            foreach (LicenseInfo l in listed)
            {
                Assert.IsFalse(d.ContainsKey(l.ProductCode), "product " + l.ProductCode + " listed twice");
                d[l.ProductCode] = l;
            }
            return d;
        }

        /// <summary>TESSERA_HOME set to an empty directory of its own while <paramref name="body"/>
        /// runs (the library reads it when a session opens), then put back and removed.</summary>
        static void InOwnHome(Action<string, string> body)
        {
            string dir = TestEnv.TempDir();
            string home = Path.Combine(dir, "home");
            Directory.CreateDirectory(home);
            string saved = Environment.GetEnvironmentVariable("TESSERA_HOME");
            Environment.SetEnvironmentVariable("TESSERA_HOME", home);
            try
            {
                body(dir, home);
            }
            finally
            {
                Environment.SetEnvironmentVariable("TESSERA_HOME", saved);
                Directory.Delete(dir, true);
            }
        }

        /// <summary>An activation of the demo publisher for <paramref name="product"/>, answering a
        /// request <paramref name="s"/> makes.</summary>
        static byte[] ActivationFor(Session s, string dir, uint product, string extra = "", IDictionary<string, string> env = null)
        {
            string key = Path.Combine(dir, "demo.key");
            if (!File.Exists(key))
                TestEnv.Tool("tessera-vendor", string.Format("keygen --demo --out \"{0}\"", key));
            string req = Path.Combine(dir, "request.bin");
            string act = Path.Combine(dir, "activation-" + product + ".bin");
            File.WriteAllBytes(req, s.ActivationRequest());
            ProcessResult r = TestEnv.Run(Path.Combine(TestEnv.BinDir, "tessera-vendor"), string.Format(
                "activate --key \"{0}\" --request \"{1}\" --out \"{2}\" --product {3} {4}", key, req, act, product, extra), env);
            Assert.AreEqual(0, r.ExitCode, "tessera-vendor activate: " + r);
            return File.ReadAllBytes(act);
        }

        [Test]
        public void TheLicensedHomeListsItsThreeLicenses()
        {
            using (Session s = OpenSoftware())
            {
                var listed = ByProduct(s);
                // Other tests may add licenses of their own products to the home; these three
                // are scripts/licensed-home.sh's.
                foreach (uint p in new[] { Products.Demo, Products.SingleSeat, Products.Basic })
                    Assert.IsTrue(listed.ContainsKey(p), "product " + p + " is not listed");
                LicenseInfo one = listed[Products.Demo], two = listed[Products.SingleSeat], three = listed[Products.Basic];

                Assert.AreEqual(0xffu, one.Features);
                Assert.AreEqual(2u, one.Quantity);
                Assert.AreEqual(CountingUnit.Process, one.CountingUnit);
                Assert.IsTrue(one.ExclusiveAllowed);
                Assert.AreEqual(LicenseFlags.ExclusiveAllowed, one.Flags);

                Assert.AreEqual(new object[] { 0xffu, 1u, CountingUnit.Handle },
                                new object[] { two.Features, two.Quantity, two.CountingUnit });
                Assert.AreEqual(new object[] { 0x1u, 10u, CountingUnit.Handle },
                                new object[] { three.Features, three.Quantity, three.CountingUnit });
                foreach (LicenseInfo l in new[] { two, three })
                {
                    Assert.IsFalse(l.ExclusiveAllowed);
                    Assert.AreEqual(LicenseFlags.None, l.Flags);
                }

                string serial;
                using (Seat seat = s.Acquire(Products.Basic))
                    serial = seat.Info.ContainerSerial;
                foreach (LicenseInfo l in new[] { one, two, three })
                {
                    Assert.AreEqual(Demo.VendorId, l.VendorId);
                    Assert.AreEqual(0u, l.SeatsInUse);
                    Assert.AreEqual(0ul, l.ExpiryUnixSeconds);
                    Assert.IsNull(l.Expiry);
                    Assert.AreEqual(Sources.Software, l.Source);
                    Assert.AreEqual(ContainerKind.Software, l.ContainerKind);
                    Assert.AreEqual(Transport.None, l.Transport);
                    Assert.AreEqual(Status.Ok, l.Status);
                    Assert.AreEqual("", l.Server);
                    Assert.AreEqual(serial, l.ContainerSerial, "all three live in the container a seat reports");
                    StringAssert.StartsWith("SW-", l.ContainerSerial);
                }
                StringAssert.Contains("product 1 of vendor 7e55", one.ToString());
                Assert.Throws<NotSupportedException>(() => ((IList<LicenseInfo>)s.Licenses()).Clear(),
                                                     "the list is read-only");
            }
        }

        [Test]
        public void SeatsInUseFollowTheSeatsHeld()
        {
            using (Session s = OpenSoftware())
            {
                var held = new List<Seat>();
                try
                {
                    for (int i = 0; i < 3; i++) held.Add(s.Acquire(Products.Basic));
                    Seat two = s.Acquire(Products.SingleSeat);
                    held.Add(two);
                    held.Add(s.Acquire(Products.Demo));
                    held.Add(s.Acquire(Products.Demo));   // per process: one seat for both
                    var listed = ByProduct(s);
                    Assert.AreEqual(1u, listed[Products.Demo].SeatsInUse);
                    Assert.AreEqual(1u, listed[Products.SingleSeat].SeatsInUse);
                    Assert.AreEqual(3u, listed[Products.Basic].SeatsInUse);
                    // A full license is still listed as usable: Status says nothing of free seats.
                    Assert.AreEqual(Status.Ok, listed[Products.SingleSeat].Status);
                    held[0].Dispose();
                    two.Dispose();
                    listed = ByProduct(s);
                    Assert.AreEqual(0u, listed[Products.SingleSeat].SeatsInUse);
                    Assert.AreEqual(2u, listed[Products.Basic].SeatsInUse);
                }
                finally
                {
                    foreach (Seat seat in held) seat.Dispose();
                }
                var after = ByProduct(s);
                foreach (uint p in new[] { Products.Demo, Products.SingleSeat, Products.Basic })
                    Assert.AreEqual(0u, after[p].SeatsInUse, "product " + p);
                // Listing took no seat: the single seat of product 2 is free.
                using (Seat seat = s.Acquire(Products.SingleSeat))
                    Assert.AreEqual(1u, seat.Info.SeatsInUse);
            }
        }

        [Test]
        public void AnEmptyHomeListsNothingAndAnotherKeyVerifiesNothing()
        {
            InOwnHome((dir, home) =>
            {
                using (Session s = OpenSoftware())
                    Assert.AreEqual(0, s.Licenses().Count);
            });
            // The licensed home, opened with the demo vendor id but another publisher's key.
            byte[] other = new byte[Library.PublisherKeyLength];
            string hex = "987d566ded865e1e43896841d6d8afba4e271729ea533595aacfdad26ec4a6cd";
            for (int i = 0; i < other.Length; i++) other[i] = Convert.ToByte(hex.Substring(2 * i, 2), 16);
            using (Session s = OpenSoftware(other))
                Assert.AreEqual(0, s.Licenses().Count);
        }

        [Test]
        public void AnExpiredAndATimeLimitedLicense()
        {
            // The expired license comes from a tessera-vendor whose clock libfaketime sets ten
            // days back, valid for two days; the other for 30 days from now. Nothing depends on
            // the date the test runs.
            string faketime = null;
            foreach (string arch in Directory.GetDirectories("/usr/lib"))
            {
                string p = Path.Combine(arch, "faketime", "libfaketime.so.1");
                if (File.Exists(p)) { faketime = p; break; }
            }
            Assert.IsNotNull(faketime, "libfaketime is missing (scripts/install-deps.sh installs faketime)");
            var behind = new Dictionary<string, string>
            {
                { "LD_PRELOAD", faketime }, { "FAKETIME", "-10d" }, { "FAKETIME_DONT_FAKE_MONOTONIC", "1" },
            };
            InOwnHome((dir, home) =>
            {
                using (Session s = OpenSoftware())
                {
                    s.ActivationInstall(ActivationFor(s, dir, 5, "--days 2", behind));
                    DateTime before = DateTime.UtcNow;
                    s.ActivationInstall(ActivationFor(s, dir, 6, "--days 30 --quantity 3"));
                    DateTime after = DateTime.UtcNow;

                    var listed = ByProduct(s);
                    CollectionAssert.AreEquivalent(new[] { 5u, 6u }, listed.Keys);
                    LicenseInfo expired = listed[5], limited = listed[6];
                    Assert.AreEqual(Status.Expired, expired.Status);
                    Assert.IsTrue(expired.Expiry.HasValue);
                    Assert.That(expired.Expiry.Value, Is.LessThan(before));
                    Assert.AreEqual(DateTimeKind.Utc, expired.Expiry.Value.Kind);
                    // What the list said is what an acquire meets.
                    Assert.Throws<LicenseExpiredException>(() => s.Acquire(5).Dispose());

                    Assert.AreEqual(Status.Ok, limited.Status);
                    Assert.AreEqual(3u, limited.Quantity);
                    Assert.AreEqual(CountingUnit.Station, limited.CountingUnit, "the vendor tool's default");
                    Assert.IsTrue(limited.Expiry.HasValue);
                    TimeSpan second = TimeSpan.FromSeconds(1);
                    Assert.That(limited.Expiry.Value, Is.GreaterThanOrEqualTo(before.AddDays(30) - second));
                    Assert.That(limited.Expiry.Value, Is.LessThanOrEqualTo(after.AddDays(30) + second));
                    using (Seat seat = s.Acquire(6))
                        Assert.AreEqual(limited.ExpiryUnixSeconds, seat.Info.ExpiryUnixSeconds);
                }
            });
        }

        [Test]
        public void TheListGrewBetweenTheSizeQueryAndTheCall()
        {
            // An activation installed right after the size query: the second call finds room for
            // one license too few, and the binding asks again with room for two.
            InOwnHome((dir, home) =>
            {
                using (Session s = OpenSoftware())
                {
                    s.ActivationInstall(ActivationFor(s, dir, 7));
                    byte[] second = ActivationFor(s, dir, 8);
                    Assert.AreEqual(1, s.Licenses().Count);

                    var caps = new List<ulong>();
                    var statuses = new List<Status>();
                    IReadOnlyList<LicenseInfo> listed = Session.ListLicenses(
                        (LicenseInfoNative[] o, UIntPtr cap, UIntPtr size, out UIntPtr n) =>
                        {
                            caps.Add(cap.ToUInt64());
                            Status st = NativeMethods.tessera_license_list(s.Handle, o, cap, size, out n);
                            statuses.Add(st);
                            if (caps.Count == 1) s.ActivationInstall(second);
                            return st;
                        });
                    CollectionAssert.AreEqual(new ulong[] { 0, 1, 2 }, caps);
                    CollectionAssert.AreEqual(new[] { Status.BufferTooSmall, Status.BufferTooSmall, Status.Ok }, statuses);
                    CollectionAssert.AreEquivalent(new[] { 7u, 8u }, listed.Select(l => l.ProductCode));
                }
            });
        }

        [Test]
        public void AListThatKeepsGrowingIsGivenUp()
        {
            int calls = 0;
            var e = Assert.Throws<BufferTooSmallException>(() => Session.ListLicenses(
                (LicenseInfoNative[] o, UIntPtr cap, UIntPtr size, out UIntPtr n) =>
                {
                    calls++;
                    n = (UIntPtr)(cap.ToUInt64() + 1);
                    return Status.BufferTooSmall;
                }));
            Assert.AreEqual(Session.ListTries, calls);
            StringAssert.Contains("grew", e.Message);
            Assert.AreEqual("tessera_license_list", e.Call);
        }

        [Test]
        public void ALibraryListingPastTheRoomGivenIsAnInternalError()
        {
            Assert.Throws<InternalErrorException>(() => Session.ListLicenses(
                (LicenseInfoNative[] o, UIntPtr cap, UIntPtr size, out UIntPtr n) =>
                {
                    n = (UIntPtr)(cap.ToUInt64() + 5);
                    return Status.Ok;
                }));
        }

        [Test]
        public void AnUnreadableHomeIsTheAnswerWhenNothingElseHoldsALicense()
        {
            InOwnHome((dir, home) =>
            {
                // A file where the home should be (a directory without permissions would not
                // stop root).
                Directory.Delete(home);
                File.WriteAllText(home, "not a directory");
                using (Session s = OpenSoftware())
                {
                    var e = Assert.Throws<TesseraIOException>(() => s.Licenses());
                    Assert.AreEqual("tessera_license_list", e.Call);
                    Assert.IsNotEmpty(e.Detail);
                }
            });
        }
    }
}
