// LibraryLoadTests.cs: the first-use check: a library that is missing, lacks the ABI call or
// speaks another ABI gives a LibraryLoadException that says which library was looked for
// and how it is found. In-process against fakes, and end to end in a child mono process
// pointed by a dllmap at a missing path and at stub libraries built here.
using System;
using System.Collections.Generic;
using System.IO;
using NUnit.Framework;

namespace Tessera.Tests
{
    [TestFixture]
    public class LibraryLoadTests
    {
        static void AssertSaysHowItIsFound(LibraryLoadException e)
        {
            Assert.AreEqual("tessera", e.LibraryName);
            Assert.AreEqual(Status.Unsupported, e.Status);
            StringAssert.Contains("libtessera.so", e.Message);
            StringAssert.Contains("LD_LIBRARY_PATH", e.Message);
            StringAssert.Contains("system library path", e.Message);
            StringAssert.Contains("dllmap", e.Message);
        }

        [Test]
        public void AMissingLibraryIsALibraryLoadException()
        {
            var e = Assert.Throws<LibraryLoadException>(() => Library.Check(8, () => { throw new DllNotFoundException("tessera"); }));
            Assert.IsInstanceOf<TesseraException>(e);
            Assert.IsInstanceOf<DllNotFoundException>(e.InnerException);
            StringAssert.Contains("could not be loaded", e.Message);
            AssertSaysHowItIsFound(e);
        }

        [Test]
        public void ALibraryWithoutTheAbiCallIsALibraryLoadException()
        {
            var e = Assert.Throws<LibraryLoadException>(
                () => Library.Check(8, () => { throw new EntryPointNotFoundException("tessera_abi_version"); }));
            Assert.IsInstanceOf<EntryPointNotFoundException>(e.InnerException);
            StringAssert.Contains("tessera_abi_version", e.Message);
            AssertSaysHowItIsFound(e);
        }

        [Test]
        public void AnotherAbiIsRefused()
        {
            var e = Assert.Throws<LibraryLoadException>(() => Library.Check(8, () => 2));
            StringAssert.Contains("ABI 2", e.Message);
            StringAssert.Contains("ABI 1", e.Message);
            AssertSaysHowItIsFound(e);
            Assert.DoesNotThrow(() => Library.Check(8, () => Library.AbiVersion));
        }

        [Test]
        public void A32BitProcessIsRefusedBeforeAnyHandleIsMade()
        {
            bool probed = false;
            var e = Assert.Throws<LibraryLoadException>(() => Library.Check(4, () => { probed = true; return 1; }));
            StringAssert.Contains("64-bit", e.Message);
            Assert.IsFalse(probed);
        }

        // Runs Quickstart.exe in a child mono with Tessera.dll mapped (Tessera.dll.config) to `target`.
        static ProcessResult RunMapped(string dir, string target)
        {
            foreach (string f in new[] { "Tessera.dll", "Quickstart.exe" })
                File.Copy(Path.Combine(TestEnv.OutDir, f), Path.Combine(dir, f), true);
            File.WriteAllText(Path.Combine(dir, "Tessera.dll.config"),
                "<configuration>\n  <dllmap dll=\"tessera\" target=\"" + target + "\" />\n</configuration>\n");
            return TestEnv.Run("mono", "\"" + Path.Combine(dir, "Quickstart.exe") + "\"");
        }

        static string BuildStub(string dir, string name, string source)
        {
            string c = Path.Combine(dir, name + ".c"), so = Path.Combine(dir, name + ".so");
            File.WriteAllText(c, source);
            ProcessResult r = TestEnv.Run("cc", string.Format("-shared -fPIC -o \"{0}\" \"{1}\"", so, c));
            Assert.AreEqual(0, r.ExitCode, "building " + name + ": " + r);
            return so;
        }

        [Test]
        public void AnAppGetsTheLoadErrorEndToEnd()
        {
            string dir = TestEnv.TempDir();
            try
            {
                ProcessResult missing = RunMapped(dir, Path.Combine(dir, "nowhere", "libtessera.so"));
                Assert.AreNotEqual(0, missing.ExitCode, missing.ToString());
                StringAssert.Contains("could not be loaded", missing.Stdout, missing.ToString());
                StringAssert.Contains("LD_LIBRARY_PATH", missing.Stdout);
                StringAssert.Contains("quickstart: FAILED", missing.Stdout);

                string abi2 = BuildStub(dir, "libabi2", "unsigned tessera_abi_version(void) { return 2; }\n");
                ProcessResult other = RunMapped(dir, abi2);
                Assert.AreNotEqual(0, other.ExitCode, other.ToString());
                StringAssert.Contains("speaks ABI 2", other.Stdout, other.ToString());

                string none = BuildStub(dir, "libnoabi", "int not_tessera(void) { return 0; }\n");
                ProcessResult noAbi = RunMapped(dir, none);
                Assert.AreNotEqual(0, noAbi.ExitCode, noAbi.ToString());
                StringAssert.Contains("has no tessera_abi_version", noAbi.Stdout, noAbi.ToString());

                // And the real library, mapped the same way, passes.
                string real = null;
                foreach (string d in (Environment.GetEnvironmentVariable("LD_LIBRARY_PATH") ?? "").Split(':'))
                    if (d != "" && File.Exists(Path.Combine(d, "libtessera.so"))) { real = Path.Combine(d, "libtessera.so"); break; }
                Assert.IsNotNull(real, "libtessera.so is on LD_LIBRARY_PATH");
                ProcessResult ok = RunMapped(dir, real);
                Assert.AreEqual(0, ok.ExitCode, ok.ToString());
                StringAssert.Contains("quickstart: all steps succeeded", ok.Stdout);
            }
            finally
            {
                Directory.Delete(dir, true);
            }
        }
    }
}
