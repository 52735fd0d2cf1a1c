// Library.cs: finding libtessera, checking its ABI on first use, and the library-wide
// constants and queries (version, status words).
using System;
using System.Runtime.InteropServices;

namespace Tessera
{
    /// <summary>The native library: its ABI check, version and constants.</summary>
    public static class Library
    {
        /// <summary>The ABI this binding was written for (<c>TESSERA_ABI_VERSION</c> of tessera.h).
        /// A library reporting another <c>tessera_abi_version()</c> is refused.</summary>
        public const uint AbiVersion = 1;

        /// <summary>The name DllImport looks for; Mono loads it as libtessera.so.</summary>
        public const string NativeLibraryName = NativeMethods.Lib;

        /// <summary>Bytes a ciphertext adds to its plaintext (<c>TESSERA_CIPHERTEXT_OVERHEAD</c>).</summary>
        public const int CiphertextOverhead = 56;

        /// <summary>Length of a publisher public key (<c>TESSERA_PUBLISHER_KEY_LEN</c>).</summary>
        public const int PublisherKeyLength = 32;

        /// <summary>Size of the seat details' serial and server fields, NUL included (<c>TESSERA_SERIAL_MAX</c>).</summary>
        public const int SerialMax = NativeMethods.TESSERA_SERIAL_MAX;

        static readonly object gate = new object();
        static volatile bool checkedOk;

        /// <summary>Loads libtessera and checks its ABI version, once; every entry point of the
        /// binding calls it. Throws <see cref="LibraryLoadException"/> when the library cannot be
        /// found or loaded, lacks tessera_abi_version, or speaks another ABI.</summary>
        public static void EnsureLoaded()
        {
            if (checkedOk) return;
            lock (gate)
            {
                if (checkedOk) return;
                Check(IntPtr.Size, ProbeAbi);
                checkedOk = true;
            }
        }

        static uint ProbeAbi()
        {
            return NativeMethods.tessera_abi_version();
        }

        /// <summary>The check itself, with the pointer size and the ABI probe passed in so that
        /// tests can run it against a missing or mismatched library.</summary>
        internal static void Check(int pointerSize, Func<uint> abiProbe)
        {
            if (pointerSize != 8)
                throw new LibraryLoadException(NativeLibraryName, string.Format(
                    "Tessera: this process is {0}-bit; tessera_session and tessera_seat are 64-bit handles "
                    + "held in IntPtr, so the binding needs a 64-bit process (and a 64-bit libtessera.so)",
                    pointerSize * 8), null);
            uint abi;
            try
            {
                abi = abiProbe();
            }
            catch (DllNotFoundException e)
            {
                throw new LibraryLoadException(NativeLibraryName, NotFoundMessage("could not be loaded", e), e);
            }
            catch (EntryPointNotFoundException e)
            {
                throw new LibraryLoadException(NativeLibraryName, NotFoundMessage(
                    "was loaded but has no tessera_abi_version: it is not libtessera, or a build "
                    + "older than this binding", e), e);
            }
            catch (BadImageFormatException e)
            {
                throw new LibraryLoadException(NativeLibraryName, NotFoundMessage(
                    "is not a shared library for this machine", e), e);
            }
            if (abi != AbiVersion)
                throw new LibraryLoadException(NativeLibraryName, string.Format(
                    "Tessera: the loaded libtessera speaks ABI {0}, but this binding (Tessera.dll) "
                    + "was written for ABI {1}; use the Tessera.dll built with that library. {2}",
                    abi, AbiVersion, HowFound()), null);
        }

        static string NotFoundMessage(string what, Exception e)
        {
            return string.Format("Tessera: the native library \"{0}\" (lib{0}.so) {1}. {2} ({3}: {4})",
                                 NativeLibraryName, what, HowFound(), e.GetType().Name, e.Message);
        }

        static string HowFound()
        {
            string ld = Environment.GetEnvironmentVariable("LD_LIBRARY_PATH");
            string at;
            try { at = typeof(Library).Assembly.Location; } catch (Exception) { at = "Tessera.dll"; }
            return string.Format(
                "Mono looks for lib{0}.so in the directories of LD_LIBRARY_PATH (now: {1}), then on "
                + "the system library path (ld.so.cache: e.g. `make install PREFIX=/usr/local` puts "
                + "libtessera.so and libtessera.so.0 in /usr/local/lib; run ldconfig after), after "
                + "applying any <dllmap dll=\"{0}\" target=\"...\"/> in {2}.config or /etc/mono/config.",
                NativeLibraryName, string.IsNullOrEmpty(ld) ? "unset" : "\"" + ld + "\"", at);
        }

        /// <summary>The library's version ("0.1.0", <c>tessera_version</c>).</summary>
        public static string Version
        {
            get
            {
                EnsureLoaded();
                return NativeMethods.CopyString(NativeMethods.tessera_version());
            }
        }

        /// <summary>The ABI version the loaded library reports (<c>tessera_abi_version</c>).</summary>
        public static uint NativeAbiVersion
        {
            get
            {
                EnsureLoaded();
                return NativeMethods.tessera_abi_version();
            }
        }

        /// <summary>The library's words for a status (<c>tessera_status_str</c>): "no seat
        /// available"; "unknown status" for a number it does not know.</summary>
        public static string Describe(Status status)
        {
            EnsureLoaded();
            return NativeMethods.CopyString(NativeMethods.tessera_status_str((int)status));
        }
    }
}
