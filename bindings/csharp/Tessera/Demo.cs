// Demo.cs: the demo publisher of the examples and tests.
using System;

namespace Tessera
{
    /// <summary>The built-in demo publisher (<c>tessera-vendor keygen --demo</c>). Its key pair
    /// is PUBLIC and protects NOTHING: anyone can issue licenses for it. It exists for
    /// examples and tests only; a real app compiles in its own publisher key (tessera-vendor
    /// keygen prints it).</summary>
    public static class Demo
    {
        /// <summary>The demo publisher's vendor id, 0x7E55.</summary>
        public const uint VendorId = 0x7E55;

        /// <summary>The product the examples use.</summary>
        public const uint ProductCode = 1;

        static readonly byte[] key = {
            0x3b, 0x9a, 0x9c, 0x54, 0x9e, 0xc7, 0x59, 0xd5,
            0x34, 0x40, 0x96, 0xd0, 0xea, 0xa5, 0xe7, 0xe7,
            0xfe, 0x34, 0x97, 0x5e, 0x17, 0x7c, 0x58, 0x6e,
            0x78, 0xbd, 0xb7, 0x0b, 0xc2, 0x72, 0x9b, 0x18,
        };

        /// <summary>The demo publisher's Ed25519 public key (32 bytes; a fresh copy each time).
        /// Public and insecure.</summary>
        public static byte[] PublisherKey
        {
            get { return (byte[])key.Clone(); }
        }
    }
}
