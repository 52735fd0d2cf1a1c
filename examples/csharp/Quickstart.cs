// Quickstart.cs: a protected app in C#, end to end (the steps of examples/c/quickstart.c).
//
// Opens the Tessera runtime for a publisher, acquires a seat of a product, encrypts and
// decrypts a message with the product's key (derived mode, then direct mode), shows the
// seat, releases it and closes. Prints each step; any failure is a TesseraException whose
// message gives the status in words and the library's detail.
//
// It uses the built-in demo publisher (Tessera.Demo: vendor 0x7E55, product 1), whose key is
// public and protects nothing. A real app compiles in its own publisher key. The license may
// come from a dongle, a software container (TESSERA_HOME) or a license server
// (TESSERA_SERVERS): the sources are not restricted.
//
//   bindings/csharp/build.sh out && LD_LIBRARY_PATH=target/release mono out/Quickstart.exe
using System;
using System.Text;
using Tessera;

static class Quickstart
{
    static void Ok(string step)
    {
        Console.WriteLine("{0,-28} ok", step);
    }

    static string Describe(SeatInfo info)
    {
        string where;
        if (info.ContainerKind == ContainerKind.Software)
            where = "software container";
        else if (info.Transport == Transport.Hid)
            where = "dongle, HID mode";
        else if (info.Transport == Transport.Msd)
            where = "dongle, mass-storage mode";
        else
            where = "dongle, USB";
        if (info.Source == Sources.Network)
            where += ", through license server " + info.Server;
        return where;
    }

    // Encrypts msg in mode, decrypts it again, checks the round trip and that a flipped bit
    // is caught.
    static bool RoundTrip(Seat seat, CryptMode mode, string label, string msg)
    {
        byte[] plain = Encoding.UTF8.GetBytes(msg);
        byte[] ct = seat.Encrypt(plain, mode);
        Ok("encrypt (" + label + ")");
        Console.WriteLine("  {0} bytes of plaintext -> {1} bytes of ciphertext", plain.Length, ct.Length);

        byte[] back = seat.Decrypt(ct);
        Ok("decrypt (" + label + ")");
        string text = Encoding.UTF8.GetString(back);
        bool ok = text == msg;
        Console.WriteLine("  round trip {0}: \"{1}\"", ok ? "matches" : "DIFFERS", text);

        // Any change to the ciphertext is caught.
        ct[ct.Length / 2] ^= 0x01;
        bool caught = false;
        try
        {
            seat.Decrypt(ct);
        }
        catch (TamperedException)
        {
            caught = true;
        }
        Console.WriteLine("  flipped bit detected: {0}", caught ? "yes" : "NO");
        return ok && caught;
    }

    static int Main()
    {
        try
        {
            Console.WriteLine("Tessera {0} (ABI {1})", Library.Version, Library.NativeAbiVersion);
            bool ok;
            using (Session session = Session.Open(Demo.VendorId, Demo.PublisherKey))
            {
                Ok("open");
                Seat seat;
                try
                {
                    seat = session.Acquire(Demo.ProductCode, 0x1);
                }
                catch (LicensingException e)
                {
                    Console.WriteLine("{0,-28} FAILED: {1}", "acquire product 1", e.Message);
                    Console.WriteLine("hint: activate this machine first (see README: tessera activate request/install)");
                    Console.WriteLine("quickstart: FAILED");
                    return 1;
                }
                using (seat)
                {
                    Ok("acquire product 1");

                    SeatInfo info = seat.Info;
                    Ok("seat info");
                    Console.WriteLine("  product {0} of vendor 0x{1:x}, features 0x{2:x}",
                                      info.ProductCode, info.VendorId, info.Features);
                    Console.WriteLine("  {0} of {1} seat(s) in use, counted per {2}",
                                      info.SeatsInUse, info.Quantity, info.CountingUnit.ToString().ToLowerInvariant());
                    Console.WriteLine("  container {0} ({1}), expires {2}", info.ContainerSerial, Describe(info),
                                      info.Expiry.HasValue ? info.Expiry.Value.ToString("u") : "never");

                    ok = RoundTrip(seat, CryptMode.Derived, "derived mode", "Hello from a protected app");
                    ok = RoundTrip(seat, CryptMode.Direct, "direct mode", "Keys never leave the container") && ok;

                    seat.Release();
                    Ok("release");
                    // A released seat is refused, never undefined behaviour.
                    try
                    {
                        seat.Encrypt(new byte[1]);
                        Console.WriteLine("  use after release -> NOT refused");
                        ok = false;
                    }
                    catch (ObjectDisposedException)
                    {
                        Console.WriteLine("  use after release -> refused (ObjectDisposedException)");
                    }
                }
                session.Close();
                Ok("close");
            }
            Console.WriteLine(ok ? "quickstart: all steps succeeded" : "quickstart: FAILED");
            return ok ? 0 : 1;
        }
        catch (TesseraException e)
        {
            Console.WriteLine("FAILED: {0}", e.Message);
            Console.WriteLine("quickstart: FAILED");
            return 1;
        }
    }
}
