// The order training rows are read in: a seeded shuffle per epoch,
// optionally grouped by length, a pure function of (seed, epoch) so that a
// resumed run replays the batches of the interrupted one. No LibTorch.
#ifndef LATHE_WORKER_TRAIN_BATCH_ORDER_H_
#define LATHE_WORKER_TRAIN_BATCH_ORDER_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace lathe {

// SplitMix64's finaliser: spreads nearby seeds over the whole 64-bit range.
uint64_t Mix64(uint64_t x);

// The training rows' order in `epoch` (a permutation of 0..n-1).
std::vector<size_t> EpochOrder(int64_t seed, int64_t epoch, size_t n);

// group_by_length: after the epoch's shuffle, each run of `mega` rows is
// sorted by length, longest first, and cut into batches of `batch` rows;
// the full batches of a run are then put in a seeded random order (a short
// last batch stays last, so step boundaries do not move). Rows of similar
// length share a batch, and padding to the batch's longest row wastes less,
// while batches of every length still come in random order.
void GroupByLength(std::vector<size_t>& order,
                   const std::vector<int64_t>& lengths, size_t batch,
                   size_t mega, int64_t seed, int64_t epoch);

}  // namespace lathe

#endif  // LATHE_WORKER_TRAIN_BATCH_ORDER_H_
