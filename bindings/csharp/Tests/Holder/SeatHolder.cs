// SeatHolder.cs: a child process for the tests of Session.AcquireWait: holds a seat of the
// demo publisher's product until its stdin closes, so that the seat is held by another
// process. Usage: mono SeatHolder.exe PRODUCT [exclusive]
// Prints "held N" (N: seats in use, this one included) or "refused STATUS", then waits.
using System;
using Tessera;

static class SeatHolder
{
    static int Main(string[] args)
    {
        uint product = uint.Parse(args[0]);
        AcquireFlags flags = args.Length > 1 && args[1] == "exclusive" ? AcquireFlags.Exclusive : AcquireFlags.None;
        using (Session s = Session.Open(Demo.VendorId, Demo.PublisherKey))
        {
            Seat seat;
            try
            {
                seat = s.Acquire(product, 0, flags);
            }
            catch (TesseraException e)
            {
                Console.WriteLine("refused " + e.Status);
                return 0;
            }
            using (seat)
            {
                Console.WriteLine("held " + seat.Info.SeatsInUse);
                Console.Out.Flush();
                Console.In.ReadToEnd();   // until the test closes stdin (or dies)
            }
        }
        return 0;
    }
}
