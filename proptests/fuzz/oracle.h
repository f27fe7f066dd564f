// The oracle shared by the libFuzzer targets (proptests/fuzz/README.md): the input bytes become the
// database file "db" on a simulated filesystem, and every way of opening, recovering, checking,
// reading and committing to it must behave. A violation prints "DBDB FUZZ VIOLATION: ..." and
// aborts, which libFuzzer reports as a crash and saves as an input to replay.
#pragma once

#include <string>

namespace dbdb_fuzz {

// Runs the whole oracle on `image` as the database file "db":
//  (a) every error is a clean Status: Corruption (or NotFound/InvalidArgument when opening), never
//      an I/O error (the simulated filesystem injects none), never a crash, UB or hang;
//  (b) the read-only and read-write views agree (same commit, same contents), and a second
//      read-only open after the read-write handle recovered agrees too;
//  (c) if check() is OK, a full scan succeeds, is strictly ordered, agrees with a Get of every key
//      and with check()'s key count, and a commit must succeed;
//  (d) a commit (a Put of a new key) either fails cleanly or, after reopening, reads back
//      together with the previous contents;
//  (e) nothing is ignored: a header that opens is the canonical encoding of what it decodes to,
//      and on a file check() accepts, flipping one byte of the header or the committed region is
//      noticed (open or check() fails, or recovery falls back to an older commit).
void RunOracle(const std::string& image);

// The structured target's normalization: treats `image` as a mutated dbdb file and rewrites the
// header checksum, every record's checksum (walking the records from offset 512) and every commit
// record's body checksum, so that mutations reach the decoders and the tree checks behind them.
std::string RecomputeChecksums(std::string image);

}  // namespace dbdb_fuzz
