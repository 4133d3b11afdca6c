// Sequence packing for causal-lm (packing=1): which rows share a sequence.
// No LibTorch; the batches themselves are built in causal_lm.cc, where the
// model gets per-row positions and segment ids (model.h ModelInputs) so
// that attention and positions never cross rows.
#ifndef LATHE_WORKER_TASKS_PACKED_DATA_H_
#define LATHE_WORKER_TASKS_PACKED_DATA_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace lathe {

// Groups rows of the given token `lengths` into packs of at most `capacity`
// tokens, best fit in order of decreasing length: each row goes to the pack
// with the least room that still fits it. A row is never split; a row
// longer than `capacity` gets a pack of its own. Within a pack rows keep
// index order, and packs are ordered by their first row, so the result
// depends on the lengths alone. Every index appears exactly once.
std::vector<std::vector<size_t>> PackRows(const std::vector<int64_t>& lengths,
                                          int64_t capacity);

}  // namespace lathe

#endif  // LATHE_WORKER_TASKS_PACKED_DATA_H_
