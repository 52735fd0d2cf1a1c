// TestEnv.cs: what the tests need from their surroundings. scripts/test-csharp.sh sets
// TESSERA_ROOT (the repository), TESSERA_BIN_DIR (tessera, tessera-vendor), TESSERA_HOME (a
// licensed home: products 1, 2 and 3 of the demo publisher) and LD_LIBRARY_PATH.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Threading;
using NUnit.Framework;

namespace Tessera.Tests
{
    /// <summary>The products scripts/licensed-home.sh installs.</summary>
    static class Products
    {
        /// <summary>features 0xff, 2 seats per process, exclusive allowed.</summary>
        public const uint Demo = 1;
        /// <summary>features 0xff, 1 seat per handle.</summary>
        public const uint SingleSeat = 2;
        /// <summary>features 0x01 only, 10 seats per handle.</summary>
        public const uint Basic = 3;
        /// <summary>No license anywhere.</summary>
        public const uint Unlicensed = 999;
    }

    sealed class ProcessResult
    {
        public int ExitCode;
        public string Stdout;
        public string Stderr;

        public override string ToString()
        {
            return string.Format("exit {0}\n--- stdout\n{1}\n--- stderr\n{2}", ExitCode, Stdout, Stderr);
        }
    }

    static class TestEnv
    {
        static string Require(string name)
        {
            string v = Environment.GetEnvironmentVariable(name);
            if (string.IsNullOrEmpty(v))
                Assert.Fail(name + " is not set: run the tests with scripts/test-csharp.sh");
            return v;
        }

        public static string Root { get { return Require("TESSERA_ROOT"); } }
        public static string BinDir { get { return Require("TESSERA_BIN_DIR"); } }
        public static string Home { get { return Require("TESSERA_HOME"); } }

        /// <summary>Where Tessera.Tests.dll, Tessera.dll and Quickstart.exe were built (not a
        /// shadow copy).</summary>
        public static string OutDir
        {
            get
            {
                string p = new Uri(typeof(TestEnv).Assembly.CodeBase).LocalPath;
                return Path.GetDirectoryName(p);
            }
        }

        public static Session Open()
        {
            return Session.Open(Demo.VendorId, Demo.PublisherKey);
        }

        public static string TempDir()
        {
            string d = Path.Combine(Path.GetTempPath(), "tessera-cs-test-" + Guid.NewGuid().ToString("N"));
            Directory.CreateDirectory(d);
            return d;
        }

        public static ProcessResult Run(string exe, string args, IDictionary<string, string> env = null)
        {
            var psi = new ProcessStartInfo(exe, args)
            {
                UseShellExecute = false,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            if (env != null)
                foreach (var kv in env)
                {
                    if (kv.Value == null) psi.EnvironmentVariables.Remove(kv.Key);
                    else psi.EnvironmentVariables[kv.Key] = kv.Value;
                }
            using (Process p = Process.Start(psi))
            {
                string err = null;
                var t = new Thread(() => { err = p.StandardError.ReadToEnd(); });
                t.Start();
                string output = p.StandardOutput.ReadToEnd();
                p.WaitForExit();
                t.Join();
                return new ProcessResult { ExitCode = p.ExitCode, Stdout = output, Stderr = err };
            }
        }

        /// <summary>Runs a tool of TESSERA_BIN_DIR and fails the test unless it succeeds.</summary>
        public static ProcessResult Tool(string name, string args)
        {
            ProcessResult r = Run(Path.Combine(BinDir, name), args);
            Assert.AreEqual(0, r.ExitCode, name + " " + args + " failed: " + r);
            return r;
        }
    }
}
