// quickstart.cpp: the C quickstart in C++ with tessera.hpp (RAII, exceptions).
// Uses the built-in demo publisher (vendor 0x7E55, product 1), as examples/c/quickstart.c.
#include <cstdio>
#include <string>
#include <vector>

#include "tessera.hpp"

static const uint8_t PUBLISHER_KEY[TESSERA_PUBLISHER_KEY_LEN] = {
    0x3b, 0x9a, 0x9c, 0x54, 0x9e, 0xc7, 0x59, 0xd5, 0x34, 0x40, 0x96, 0xd0, 0xea, 0xa5, 0xe7, 0xe7,
    0xfe, 0x34, 0x97, 0x5e, 0x17, 0x7c, 0x58, 0x6e, 0x78, 0xbd, 0xb7, 0x0b, 0xc2, 0x72, 0x9b, 0x18,
};

int main() {
    try {
        tessera::session session(0x7E55, PUBLISHER_KEY);
        for (const tessera_license_info &l : session.licenses())
            std::printf("licensed: product %u, features %#x, %u of %u in use\n", l.product_code,
                        l.features, l.seats_in_use, l.quantity);
        // Waits up to 2 s when every seat is taken (here one is free at once).
        tessera::seat seat = session.acquire_wait(1, 2000, 0x1);
        tessera_seat_details info = seat.info();
        std::printf("seat of product %u, %u of %u in use, container %s\n", info.product_code, info.seats_in_use,
                    info.quantity, info.container_serial);

        const std::string text = "Hello from C++";
        std::vector<uint8_t> data(text.begin(), text.end());
        for (auto m : {tessera::mode::derived, tessera::mode::direct}) {
            std::vector<uint8_t> ct = seat.encrypt(data, m);
            std::vector<uint8_t> pt = seat.decrypt(ct);
            if (pt != data) {
                std::printf("round trip differs\n");
                return 1;
            }
            ct[ct.size() / 2] ^= 1;
            try {
                (void)seat.decrypt(ct);
                std::printf("a flipped bit went unnoticed\n");
                return 1;
            } catch (const tessera::error &e) {
                if (e.status() != TESSERA_E_TAMPERED) throw;
            }
        }
        std::printf("round trips match, tampering detected\n");

        // A product nobody licensed: an exception carrying the status.
        try {
            (void)session.acquire(424242);
            std::printf("an unlicensed product was granted\n");
            return 1;
        } catch (const tessera::error &e) {
            std::printf("unlicensed product refused: %s (status %d)\n", e.what(), static_cast<int>(e.status()));
            if (e.status() != TESSERA_E_NO_LICENSE) return 1;
        }

        // Move-only: the moved-from seat is empty, the seat is released exactly once.
        tessera::seat moved = std::move(seat);
        if (seat || !moved) return 1;
        moved.reset();
        std::printf("cpp quickstart: all steps succeeded\n");
        return 0;
    } catch (const tessera::error &e) {
        std::printf("FAILED: %s (status %d)\n", e.what(), static_cast<int>(e.status()));
        return 1;
    }
}
