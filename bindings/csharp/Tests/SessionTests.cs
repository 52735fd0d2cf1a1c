// SessionTests.cs: the quickstart flow and the working paths: seat info, both encryption
// modes, portability of ciphertext, exclusive seats, and offline activation end to end.
using System;
using System.IO;
using System.Linq;
using System.Text;
using NUnit.Framework;

namespace Tessera.Tests
{
    [TestFixture]
    public class SessionTests
    {
        [Test]
        public void LibraryIsVersion1AbiAndNamesItsVersion()
        {
            Library.EnsureLoaded();
            Assert.AreEqual(1u, Library.NativeAbiVersion);
            Assert.AreEqual(Library.AbiVersion, Library.NativeAbiVersion);
            StringAssert.IsMatch(@"^\d+\.\d+\.\d+", Library.Version);
        }

        [Test]
        public void DemoPublisherIsTheQuickstartsAndCannotBeChangedFromOutside()
        {
            Assert.AreEqual(0x7E55u, Demo.VendorId);
            byte[] k = Demo.PublisherKey;
            Assert.AreEqual(Library.PublisherKeyLength, k.Length);
            Assert.AreEqual(0x3b, k[0]);
            Assert.AreEqual(0x18, k[31]);
            k[0] ^= 0xff;
            Assert.AreEqual(0x3b, Demo.PublisherKey[0], "PublisherKey hands out a copy");
        }

        [Test]
        public void QuickstartFlow()
        {
            using (Session session = TestEnv.Open())
            {
                Assert.IsFalse(session.IsClosed);
                Assert.IsFalse(session.Handle.IsInvalid);
                using (Seat seat = session.Acquire(Products.Demo, 0x1))
                {
                    Assert.AreSame(session, seat.Session);
                    Assert.IsFalse(seat.IsReleased);

                    SeatInfo info = seat.Info;
                    Assert.AreEqual(Demo.VendorId, info.VendorId);
                    Assert.AreEqual(Products.Demo, info.ProductCode);
                    Assert.AreEqual(0xffu, info.Features);
                    Assert.AreEqual(2u, info.Quantity);
                    Assert.AreEqual(1u, info.SeatsInUse);
                    Assert.AreEqual(CountingUnit.Process, info.CountingUnit);
                    Assert.AreEqual(Sources.Software, info.Source);
                    Assert.AreEqual(ContainerKind.Software, info.ContainerKind);
                    Assert.AreEqual(Transport.None, info.Transport);
                    Assert.AreEqual("", info.Server);
                    Assert.IsFalse(info.Exclusive);
                    Assert.AreEqual(0ul, info.ExpiryUnixSeconds);
                    Assert.IsNull(info.Expiry);
                    StringAssert.StartsWith("SW-", info.ContainerSerial);
                    Assert.That(info.ContainerSerial.Length, Is.LessThan(Library.SerialMax));

                    foreach (CryptMode mode in new[] { CryptMode.Derived, CryptMode.Direct })
                    {
                        byte[] plain = Encoding.UTF8.GetBytes("Hello from a protected app");
                        byte[] ct = seat.Encrypt(plain, mode);
                        Assert.AreEqual(plain.Length + Library.CiphertextOverhead, ct.Length, mode.ToString());
                        CollectionAssert.AreEqual(plain, seat.Decrypt(ct), mode.ToString());

                        ct[ct.Length / 2] ^= 0x01;
                        var e = Assert.Throws<TamperedException>(() => seat.Decrypt(ct));
                        Assert.AreEqual(Status.Tampered, e.Status);
                        Assert.IsInstanceOf<LicensingException>(e);
                        Assert.AreEqual("tessera_decrypt", e.Call);
                        Assert.IsNotEmpty(e.Detail, "the library's detail comes with the status");
                    }
                    seat.Release();
                    Assert.IsTrue(seat.IsReleased);
                }
                session.Close();
                Assert.IsTrue(session.IsClosed);
            }
        }

        [Test]
        public void EncryptionIsFreshEachTimeAndHidesThePlaintext()
        {
            using (Session s = TestEnv.Open())
            using (Seat seat = s.Acquire(Products.Demo))
            {
                byte[] plain = Encoding.ASCII.GetBytes("the same message twice, the same message twice");
                foreach (CryptMode mode in new[] { CryptMode.Derived, CryptMode.Direct })
                {
                    byte[] a = seat.Encrypt(plain, mode), b = seat.Encrypt(plain, mode);
                    CollectionAssert.AreNotEqual(a, b, "a fresh nonce per message");
                    string hex = BitConverter.ToString(a);
                    StringAssert.DoesNotContain(BitConverter.ToString(plain, 0, 8), hex);
                }
            }
        }

        [Test]
        public void EmptyAndLargeDataRoundTrip()
        {
            using (Session s = TestEnv.Open())
            using (Seat seat = s.Acquire(Products.Demo))
            {
                byte[] ct = seat.Encrypt(new byte[0]);
                Assert.AreEqual(Library.CiphertextOverhead, ct.Length);
                Assert.AreEqual(0, seat.Decrypt(ct).Length);

                var big = new byte[1 << 20];
                new Random(7).NextBytes(big);
                byte[] bigCt = seat.Encrypt(big, CryptMode.Derived);
                Assert.AreEqual(big.Length + Library.CiphertextOverhead, bigCt.Length);
                Assert.IsTrue(big.SequenceEqual(seat.Decrypt(bigCt)));
            }
        }

        [Test]
        public void CiphertextOpensWithAnotherSeatOfTheSameProductNotAnotherProduct()
        {
            byte[] plain = Encoding.UTF8.GetBytes("portable");
            byte[] derived, direct;
            using (Session s = TestEnv.Open())
            using (Seat seat = s.Acquire(Products.Demo))
            {
                derived = seat.Encrypt(plain, CryptMode.Derived);
                direct = seat.Encrypt(plain, CryptMode.Direct);
            }
            using (Session s = TestEnv.Open())
            {
                using (Seat seat = s.Acquire(Products.Demo))
                {
                    CollectionAssert.AreEqual(plain, seat.Decrypt(derived));
                    CollectionAssert.AreEqual(plain, seat.Decrypt(direct));
                }
                using (Seat other = s.Acquire(Products.Basic))
                {
                    var e = Assert.Throws<NoLicenseException>(() => other.Decrypt(derived));
                    StringAssert.Contains("product 1", e.Detail);
                }
            }
        }

        [Test]
        public void ExclusiveSeatShutsOthersOutAndNeedsTheLicenseToAllowIt()
        {
            using (Session a = TestEnv.Open())
            using (Session b = TestEnv.Open())
            {
                using (Seat ex = a.Acquire(Products.Demo, 0, AcquireFlags.Exclusive))
                {
                    Assert.IsTrue(ex.Info.Exclusive);
                    var e = Assert.Throws<ExclusiveDeniedException>(() => b.Acquire(Products.Demo).Dispose());
                    Assert.AreEqual(Status.ExclusiveDenied, e.Status);
                }
                using (Seat shared = a.Acquire(Products.Demo))
                {
                    Assert.IsFalse(shared.Info.Exclusive);
                    Assert.Throws<ExclusiveDeniedException>(
                        () => b.Acquire(Products.Demo, 0, AcquireFlags.Exclusive).Dispose());
                }
                // Product 2's license does not allow exclusive use.
                Assert.Catch<LicensingException>(
                    () => a.Acquire(Products.SingleSeat, 0, AcquireFlags.Exclusive).Dispose());
            }
        }

        [Test]
        public void SourcesCanBeRestricted()
        {
            var o = new SessionOptions(Demo.VendorId, Demo.PublisherKey) { Sources = Sources.Dongle, Timeout = TimeSpan.FromSeconds(2) };
            using (Session s = Session.Open(o))
                Assert.Throws<NoLicenseException>(() => s.Acquire(Products.Demo).Dispose(),
                                                  "the software container is not looked at");
            o.Sources = Sources.Software;
            using (Session s = Session.Open(o))
            using (Seat seat = s.Acquire(Products.Demo))
                Assert.AreEqual(Sources.Software, seat.Info.Source);
        }

        [Test]
        public void OfflineActivationRequestAndInstall()
        {
            uint product = 1000u + (uint)new Random().Next(1, 100000);
            string dir = TestEnv.TempDir();
            try
            {
                string key = Path.Combine(dir, "demo.key");
                string req = Path.Combine(dir, "request.bin");
                string act = Path.Combine(dir, "activation.bin");
                TestEnv.Tool("tessera-vendor", string.Format("keygen --demo --out \"{0}\"", key));
                using (Session s = TestEnv.Open())
                {
                    Assert.Throws<NoLicenseException>(() => s.Acquire(product).Dispose());

                    byte[] request = s.ActivationRequest();
                    Assert.That(request.Length, Is.GreaterThan(32));
                    File.WriteAllBytes(req, request);
                    TestEnv.Tool("tessera-vendor", string.Format(
                        "activate --key \"{0}\" --request \"{1}\" --out \"{2}\" --product {3} --name \"CSharp Test\" " +
                        "--features 0x3 --quantity 1 --unit handle", key, req, act, product));
                    s.ActivationInstall(File.ReadAllBytes(act));

                    using (Seat seat = s.Acquire(product, 0x3))
                    {
                        Assert.AreEqual(product, seat.Info.ProductCode);
                        Assert.AreEqual(0x3u, seat.Info.Features);
                        Assert.AreEqual(CountingUnit.Handle, seat.Info.CountingUnit);
                    }
                    // The licenses the container held are kept.
                    using (Seat seat = s.Acquire(Products.Basic))
                        Assert.AreEqual(Products.Basic, seat.Info.ProductCode);
                }
                // A new session finds the new license too.
                using (Session s = TestEnv.Open())
                using (Seat seat = s.Acquire(product))
                    Assert.AreEqual(1u, seat.Info.Quantity);
            }
            finally
            {
                Directory.Delete(dir, true);
            }
        }
    }
}
