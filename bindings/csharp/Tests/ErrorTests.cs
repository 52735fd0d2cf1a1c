// ErrorTests.cs: every error path the binding can reach against the real library, each as
// its exception type, with the status and the library's detail.
using System;
using System.Collections.Generic;
using System.IO;
using System.Runtime.InteropServices;
using System.Threading;
using NUnit.Framework;

namespace Tessera.Tests
{
    [TestFixture]
    public class ErrorTests
    {
        // Another valid Ed25519 public key: the curve's base point, which no publisher uses.
        static byte[] OtherKey()
        {
            var k = new byte[32];
            k[0] = 0x58;
            for (int i = 1; i < 32; i++) k[i] = 0x66;
            return k;
        }

        [Test]
        public void UnknownProductIsNoLicense()
        {
            using (Session s = TestEnv.Open())
            {
                var e = Assert.Throws<NoLicenseException>(() => s.Acquire(Products.Unlicensed).Dispose());
                Assert.AreEqual(Status.NoLicense, e.Status);
                Assert.AreEqual("tessera_acquire", e.Call);
                StringAssert.Contains("product 999", e.Detail);
                StringAssert.Contains("no license", e.Message);
                StringAssert.Contains(e.Detail, e.Message);
            }
        }

        [Test]
        public void OtherVendorIsNoLicense()
        {
            using (Session s = Session.Open(0x1234, Demo.PublisherKey))
                Assert.Throws<NoLicenseException>(() => s.Acquire(Products.Demo).Dispose());
        }

        [Test]
        public void SecondSeatOfASingleSeatLicenseIsNoSeat()
        {
            using (Session s = TestEnv.Open())
            using (Seat first = s.Acquire(Products.SingleSeat))
            {
                Assert.AreEqual(1u, first.Info.SeatsInUse);
                var e = Assert.Throws<NoSeatException>(() => s.Acquire(Products.SingleSeat).Dispose());
                Assert.AreEqual(Status.NoSeat, e.Status);
                Assert.IsNotEmpty(e.Detail);
                using (Session other = TestEnv.Open())
                    Assert.Throws<NoSeatException>(() => other.Acquire(Products.SingleSeat).Dispose(),
                                                   "another session of this process is counted too");
            }
        }

        [Test]
        public void FeatureTheLicenseLacksIsFeatureMissing()
        {
            using (Session s = TestEnv.Open())
            {
                using (Seat ok = s.Acquire(Products.Basic, 0x1))
                    Assert.AreEqual(0x1u, ok.Info.Features);
                var e = Assert.Throws<FeatureMissingException>(() => s.Acquire(Products.Basic, 0x2).Dispose());
                Assert.AreEqual(Status.FeatureMissing, e.Status);
                Assert.IsInstanceOf<LicensingException>(e);
            }
        }

        [Test]
        public void ModifiedTruncatedOrForeignCiphertextIsRefused()
        {
            using (Session s = TestEnv.Open())
            using (Seat seat = s.Acquire(Products.Demo))
            {
                byte[] plain = new byte[100];
                foreach (CryptMode mode in new[] { CryptMode.Derived, CryptMode.Direct })
                {
                    byte[] ct = seat.Encrypt(plain, mode);
                    // Every single flipped byte, header, nonce, body and tag alike.
                    for (int i = 0; i < ct.Length; i++)
                    {
                        if (i == 3) continue; // the format version byte: see below
                        byte[] bad = (byte[])ct.Clone();
                        bad[i] ^= 0x80;
                        var e = Assert.Catch<LicensingException>(() => seat.Decrypt(bad), mode + " byte " + i);
                        // Bytes 8..15 name the vendor and product: another product's ciphertext.
                        // The clear header: bytes 8..12 name the publisher, 12..16 the product.
                        Status expected = i >= 8 && i < 12 ? Status.WrongVendor
                                        : i >= 12 && i < 16 ? Status.NoLicense : Status.Tampered;
                        Assert.AreEqual(expected, e.Status, mode + " byte " + i + ": " + e.Message);
                    }
                    byte[] v = (byte[])ct.Clone();
                    v[3] ^= 0x80;
                    Assert.Throws<UnknownVersionException>(() => seat.Decrypt(v));

                    byte[] cut = new byte[ct.Length - 1];
                    Array.Copy(ct, cut, cut.Length);
                    Assert.Throws<TamperedException>(() => seat.Decrypt(cut), "truncated");
                }
                Assert.Throws<TamperedException>(() => seat.Decrypt(new byte[10]), "too short");
                Assert.Throws<TamperedException>(() => seat.Decrypt(new byte[0]), "empty");
                Assert.Throws<TamperedException>(() => seat.Decrypt(new byte[200]), "not a ciphertext");
            }
        }

        [Test]
        public void WrongLengthPublisherKeyIsInvalidArgument()
        {
            foreach (int len in new[] { 0, 31, 33, 64 })
            {
                var e = Assert.Throws<InvalidArgumentException>(() => Session.Open(Demo.VendorId, new byte[len]).Dispose(),
                                                                "key of " + len + " bytes");
                Assert.AreEqual(Status.InvalidArgument, e.Status);
                Assert.AreEqual("tessera_open", e.Call);
                StringAssert.Contains("publisher_key", e.Detail);
                Assert.IsInstanceOf<UsageException>(e);
            }
        }

        [Test]
        public void OtherBadArgumentsAreRefused()
        {
            Assert.Throws<ArgumentNullException>(() => Session.Open(Demo.VendorId, null));
            Assert.Throws<ArgumentNullException>(() => Session.Open(null));
            var e = Assert.Throws<InvalidArgumentException>(() => Session.Open(0, Demo.PublisherKey).Dispose());
            StringAssert.Contains("vendor_id", e.Detail);
            e = Assert.Throws<InvalidArgumentException>(() => Session.Open(
                new SessionOptions(Demo.VendorId, Demo.PublisherKey) { Sources = (Sources)8 }).Dispose());
            StringAssert.Contains("sources", e.Detail);
            Assert.Throws<ArgumentOutOfRangeException>(() => Session.Open(
                new SessionOptions(Demo.VendorId, Demo.PublisherKey) { Timeout = TimeSpan.FromSeconds(-1) }));

            using (Session s = TestEnv.Open())
            {
                e = Assert.Throws<InvalidArgumentException>(() => s.Acquire(Products.Demo, 0, (AcquireFlags)2).Dispose());
                StringAssert.Contains("flags", e.Detail);
                Assert.Throws<ArgumentNullException>(() => s.ActivationInstall(null));
                using (Seat seat = s.Acquire(Products.Demo))
                {
                    e = Assert.Throws<InvalidArgumentException>(() => seat.Encrypt(new byte[4], (CryptMode)7));
                    Assert.AreEqual("tessera_encrypt", e.Call);
                    Assert.Throws<ArgumentNullException>(() => seat.Encrypt(null));
                    Assert.Throws<ArgumentNullException>(() => seat.Decrypt(null));
                }
            }
        }

        [Test]
        public void APublicKeyThatIsNoEd25519PointIsInvalidArgument()
        {
            // y = 2 has no x on edwards25519, so the key does not decompress.
            var k = new byte[32];
            k[0] = 2;
            var e = Assert.Throws<InvalidArgumentException>(() => Session.Open(Demo.VendorId, k).Dispose());
            StringAssert.Contains("Ed25519", e.Detail);
        }

        [Test]
        public void WrongPublisherKeyGrantsNothing()
        {
            using (Session s = Session.Open(Demo.VendorId, OtherKey()))
            {
                var e = Assert.Catch<LicensingException>(() => s.Acquire(Products.Demo).Dispose());
                Assert.That(e.Status, Is.EqualTo(Status.BadSignature).Or.EqualTo(Status.NoLicense), e.Message);
            }
        }

        [Test]
        public void ActivationFromAnotherPublisherOrGarbageIsRefusedAndChangesNothing()
        {
            string dir = TestEnv.TempDir();
            try
            {
                string key = Path.Combine(dir, "evil.key");
                string req = Path.Combine(dir, "request.bin");
                string act = Path.Combine(dir, "activation.bin");
                // Same vendor id as the demo publisher, another signing key.
                TestEnv.Tool("tessera-vendor", string.Format("keygen --vendor-id 0x7E55 --name Evil --out \"{0}\"", key));
                using (Session s = TestEnv.Open())
                {
                    File.WriteAllBytes(req, s.ActivationRequest());
                    TestEnv.Tool("tessera-vendor", string.Format(
                        "activate --key \"{0}\" --request \"{1}\" --out \"{2}\" --product 77 --quantity 5 --unit handle",
                        key, req, act));
                    var e = Assert.Catch<LicensingException>(() => s.ActivationInstall(File.ReadAllBytes(act)));
                    Assert.AreEqual(Status.BadSignature, e.Status, e.Message);
                    Assert.AreEqual("tessera_activation_install", e.Call);
                    Assert.Throws<NoLicenseException>(() => s.Acquire(77).Dispose());

                    var g = Assert.Catch<TesseraException>(() => s.ActivationInstall(new byte[] { 1, 2, 3, 4, 5 }));
                    Assert.That(g.Status, Is.EqualTo(Status.Malformed).Or.EqualTo(Status.Tampered).Or.EqualTo(Status.UnknownVersion),
                                g.Message);
                    Assert.Catch<TesseraException>(() => s.ActivationInstall(new byte[0]));
                    // Still licensed as before.
                    using (Seat seat = s.Acquire(Products.Demo))
                        Assert.AreEqual(Products.Demo, seat.Info.ProductCode);
                }
            }
            finally
            {
                Directory.Delete(dir, true);
            }
        }

        [Test]
        public void ForgedStaleAndForeignHandlesAreInvalidHandle()
        {
            Library.EnsureLoaded();
            Assert.AreEqual(Status.InvalidHandle, NativeMethods.tessera_release(0));
            Assert.AreEqual(Status.InvalidHandle, NativeMethods.tessera_close(0));
            Assert.AreEqual(Status.InvalidHandle, NativeMethods.tessera_release(0xdeadbeefcafeul));
            using (Session s = TestEnv.Open())
            {
                ulong sessionValue = s.Handle.Value;
                Status st = NativeMethods.tessera_release(sessionValue);
                Assert.AreEqual(Status.InvalidHandle, st, "a session handle is not a seat handle");
                var e = Assert.Throws<InvalidHandleException>(() => Errors.ThrowIfError(st, "tessera_release"));
                StringAssert.Contains("not a live seat handle", e.Detail);

                Seat seat = s.Acquire(Products.Basic);
                ulong seatValue = seat.Handle.Value;
                Assert.AreNotEqual(0ul, seatValue);
                seat.Release();
                Assert.AreEqual(Status.InvalidHandle, NativeMethods.tessera_release(seatValue), "stale");
                Assert.IsFalse(s.IsClosed, "the session survived all of it");
            }
        }

        [Test]
        public void RawArgumentChecksAtTheBoundary()
        {
            Library.EnsureLoaded();
            int size = Marshal.SizeOf(typeof(OpenOptionsNative));
            Assert.AreEqual(Status.InvalidArgument,
                            NativeMethods.tessera_open_options_init(IntPtr.Zero, new UIntPtr((uint)size)));
            IntPtr buf = Marshal.AllocHGlobal(size);
            try
            {
                // A size that is no version of the struct is refused.
                Assert.AreEqual(Status.InvalidArgument, NativeMethods.tessera_open_options_init(buf, new UIntPtr(8)));
            }
            finally
            {
                Marshal.FreeHGlobal(buf);
            }
            var o = new OpenOptionsNative { struct_size = 8, vendor_id = Demo.VendorId };
            SessionHandle h;
            Status st = NativeMethods.tessera_open(ref o, out h);
            Assert.AreEqual(Status.InvalidArgument, st);
            StringAssert.Contains("struct_size", NativeMethods.CopyString(NativeMethods.tessera_last_error()));
            Assert.IsTrue(h == null || h.IsInvalid, "no handle on failure");
            if (h != null) h.SetHandleAsInvalid();
        }

        [Test]
        public void TheDetailIsThisThreadsOwn()
        {
            // Two threads fail differently at the same time, many times: each exception carries
            // the detail of its own thread's call (tessera_last_error is thread-local).
            var errors = new List<string>();
            using (Session s = TestEnv.Open())
            {
                var go = new Barrier(2);
                Action<uint, uint, string> worker = (product, features, expect) =>
                {
                    for (int i = 0; i < 50; i++)
                    {
                        go.SignalAndWait();
                        try
                        {
                            s.Acquire(product, features).Dispose();
                            lock (errors) errors.Add("acquire of " + product + " succeeded");
                        }
                        catch (TesseraException e)
                        {
                            if (!e.Detail.Contains(expect))
                                lock (errors) errors.Add(expect + " expected, got: " + e.Message);
                        }
                    }
                };
                var a = new Thread(() => worker(Products.Unlicensed, 0, "product 999"));
                var b = new Thread(() => worker(Products.Basic, 0x2, "feature"));
                a.Start(); b.Start();
                a.Join(); b.Join();
            }
            Assert.IsEmpty(errors, string.Join("\n", errors));
        }

        [Test]
        public void ErrorMappingCoversUnknownNumbersByGroup()
        {
            Assert.Throws<ArgumentException>(() => Errors.Create(Status.Ok, null, "ok", ""));
            Assert.AreEqual(typeof(UsageException), Errors.Create((Status)42, "f", "w", "").GetType());
            Assert.AreEqual(typeof(LicensingException), Errors.Create((Status)150, "f", "w", "").GetType());
            Assert.AreEqual(typeof(TransportException), Errors.Create((Status)250, "f", "w", "").GetType());
            Assert.AreEqual(typeof(InternalException), Errors.Create((Status)950, "f", "w", "").GetType());
            TesseraException e = Errors.Create((Status)5000, "f", "unknown status", "why");
            Assert.AreEqual(typeof(TesseraException), e.GetType());
            Assert.AreEqual("f: unknown status (status 5000): why", e.Message);
            Assert.IsInstanceOf<TamperedException>(Errors.Create(Status.Tampered, "f", "w", ""));
            Assert.IsInstanceOf<TimedOutException>(Errors.Create(Status.Timeout, "f", "w", ""));
            Assert.IsInstanceOf<TransportException>(Errors.Create(Status.Io, "f", "w", ""));
            Assert.IsInstanceOf<InternalException>(Errors.Create(Status.Panic, "f", "w", ""));
            Assert.IsInstanceOf<UsageException>(Errors.Create(Status.InvalidHandle, "f", "w", ""));
        }
    }
}
