#include "worker/tasks/packed_data.h"

#include <algorithm>
#include <map>
#include <numeric>

namespace lathe {

std::vector<std::vector<size_t>> PackRows(const std::vector<int64_t>& lengths,
                                          int64_t capacity) {
  std::vector<size_t> order(lengths.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return lengths[a] > lengths[b]; });
  std::vector<std::vector<size_t>> packs;
  // Room left -> packs with that much room (the earliest opened first).
  std::multimap<int64_t, size_t> room;
  for (size_t row : order) {
    const int64_t len = lengths[row];
    auto it = room.lower_bound(len);
    if (it == room.end() || len > capacity) {
      packs.push_back({row});
      if (len < capacity) room.emplace(capacity - len, packs.size() - 1);
      continue;
    }
    const size_t pack = it->second;
    const int64_t left = it->first - len;
    room.erase(it);
    packs[pack].push_back(row);
    if (left > 0) room.emplace(left, pack);
  }
  for (auto& pack : packs) std::sort(pack.begin(), pack.end());
  std::sort(packs.begin(), packs.end(),
            [](const std::vector<size_t>& a, const std::vector<size_t>& b) {
              return a.front() < b.front();
            });
  return packs;
}

}  // namespace lathe
