// PackageApp.cs: an app built against the .nupkg alone (scripts/test-nupkg.sh). It is
// compiled with `mcs -r:lib/netstandard2.0/Tessera.dll` from the extracted package, nothing
// else (no NUnit), and runs with runtimes/linux-x64/native/libtessera.so copied beside it, as
// NuGet's restore lays out an app's output. It checks that Tessera.dll references no test
// framework, that the libtessera loaded is the one beside it (not one on a library path), and
// does a licensed acquire, encrypt, decrypt and release. Exit code 0 and a last line
// "package app: ok" when every check holds; any failure throws.
using System;
using System.IO;
using System.Linq;
using System.Reflection;
using System.Text;
using Tessera;

static class PackageApp
{
    static void Check(bool ok, string what)
    {
        if (!ok) throw new Exception("package app: " + what);
    }

    static int Main()
    {
        Assembly binding = typeof(Session).Assembly;
        string[] refs = binding.GetReferencedAssemblies().Select(a => a.Name).ToArray();
        Console.WriteLine("Tessera.dll {0} references {1}", binding.GetName().Version, string.Join(", ", refs));
        Check(!refs.Any(r => r.IndexOf("nunit", StringComparison.OrdinalIgnoreCase) >= 0),
            "Tessera.dll references NUnit");

        byte[] secret = Encoding.UTF8.GetBytes("what only a licensed app reads");
        using (Session session = Session.Open(Demo.VendorId, Demo.PublisherKey))
        {
            Seat seat = session.Acquire(Demo.ProductCode, 0x1);
            Check(seat.Info.ProductCode == Demo.ProductCode, "the seat is of another product");
            Check(seat.Info.Source == Sources.Software, "the seat is not from the software container");
            byte[] sealedData = seat.Encrypt(secret);
            Check(sealedData.Length == secret.Length + Library.CiphertextOverhead, "ciphertext length");
            Check(seat.Decrypt(sealedData).SequenceEqual(secret), "the round trip differs");
            sealedData[sealedData.Length - 1] ^= 1;
            bool caught = false;
            try { seat.Decrypt(sealedData); }
            catch (TamperedException) { caught = true; }
            Check(caught, "a tampered ciphertext decrypted");
            seat.Release();
            caught = false;
            try { seat.Encrypt(secret); }
            catch (ObjectDisposedException) { caught = true; }
            Check(caught, "a released seat encrypted");
        }

        // The native library in this process: exactly the one beside the app.
        string beside = Path.Combine(AppDomain.CurrentDomain.BaseDirectory, "libtessera.so");
        string[] loaded = File.ReadAllLines("/proc/self/maps")
            .Select(l => l.Split(new[] { ' ' }, 6, StringSplitOptions.RemoveEmptyEntries))
            .Where(f => f.Length == 6 && Path.GetFileName(f[5].Trim()).StartsWith("libtessera", StringComparison.Ordinal))
            .Select(f => f[5].Trim()).Distinct().ToArray();
        Console.WriteLine("libtessera {0} loaded from {1}", Library.Version, string.Join(", ", loaded));
        Check(loaded.Length == 1 && loaded[0] == Path.GetFullPath(beside),
            "the libtessera loaded is not the one beside the app (" + beside + ")");
        Console.WriteLine("package app: ok");
        return 0;
    }
}
