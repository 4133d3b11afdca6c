// c10d's Gloo process group is declared only when USE_C10D_GLOO is defined.
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include "worker/train/distributed.h"

#include <algorithm>
#include <chrono>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/train/adamw.h"

namespace lathe {

class ProcessGroupHandle {
 public:
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
};

namespace {

bool IsLoopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

// Concatenates tensors (flattened, same dtype and device) into buckets of at
// most `bucket_bytes` (a larger tensor gets a bucket of its own) and calls
// `fn` on each bucket, then copies the results back.
template <typename Fn>
void ForEachBucket(const std::vector<torch::Tensor>& tensors,
                   int64_t bucket_bytes, Fn fn) {
  size_t i = 0;
  while (i < tensors.size()) {
    std::vector<torch::Tensor> group;
    int64_t bytes = 0;
    const auto dtype = tensors[i].scalar_type();
    while (i < tensors.size() && tensors[i].scalar_type() == dtype &&
           (group.empty() ||
            bytes + tensors[i].numel() * tensors[i].element_size() <=
                bucket_bytes)) {
      bytes += tensors[i].numel() * tensors[i].element_size();
      group.push_back(tensors[i]);
      ++i;
    }
    std::vector<torch::Tensor> flat_parts;
    flat_parts.reserve(group.size());
    for (const auto& t : group) flat_parts.push_back(t.reshape({-1}));
    torch::Tensor flat = torch::cat(flat_parts);
    fn(flat);
    int64_t offset = 0;
    for (const auto& t : group) {
      const int64_t n = t.numel();
      t.copy_(flat.narrow(0, offset, n).view(t.sizes()));
      offset += n;
    }
  }
}

}  // namespace

std::pair<size_t, size_t> SplitRows(size_t begin, size_t end, int rank,
                                    int world) {
  const size_t n = end - begin;
  const size_t w = static_cast<size_t>(world);
  const size_t r = static_cast<size_t>(rank);
  const size_t base = n / w;
  const size_t extra = n % w;
  const size_t start = begin + r * base + std::min(r, extra);
  return {start, start + base + (r < extra ? 1 : 0)};
}

std::vector<int> ShardOwners(const std::vector<torch::Tensor>& tensors,
                             int world) {
  // Largest first, each to the least loaded rank: a model's few large
  // tensors (embeddings, output projection) land on different ranks.
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return tensors[a].numel() > tensors[b].numel();
  });
  std::vector<int64_t> load(static_cast<size_t>(world), 0);
  std::vector<int> owners(tensors.size(), 0);
  for (size_t i : order) {
    const int owner = static_cast<int>(
        std::min_element(load.begin(), load.end()) - load.begin());
    load[static_cast<size_t>(owner)] += tensors[i].numel();
    owners[i] = owner;
  }
  return owners;
}

absl::StatusOr<std::unique_ptr<DataParallel>> DataParallel::Connect(
    const DistributedSpec& spec, const torch::Device& device) {
  auto handle = std::make_unique<ProcessGroupHandle>();
  const auto timeout = std::chrono::milliseconds(
      static_cast<int64_t>(spec.timeout_seconds) * 1000);
  try {
    c10d::TCPStoreOptions options;
    options.port = static_cast<uint16_t>(spec.store_port);
    options.isServer = spec.rank == 0;
    options.numWorkers = static_cast<size_t>(spec.world_size);
    options.waitWorkers = true;
    options.timeout = timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(spec.store_host, options);
    handle->store = c10::make_intrusive<c10d::PrefixStore>(
        spec.store_prefix.empty() ? std::string("lathe") : spec.store_prefix,
        tcp);
    auto group_options = c10d::ProcessGroupGloo::Options::create(timeout);
    group_options->devices.push_back(
        IsLoopback(spec.store_host)
            ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
            : c10d::ProcessGroupGloo::createDefaultDevice());
    handle->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(
        handle->store, spec.rank, spec.world_size, group_options);
  } catch (const c10::Error& e) {
    return absl::UnavailableError(absl::StrCat(
        "rank ", spec.rank, " of ", spec.world_size,
        " could not join the gang at ", spec.store_host, ":", spec.store_port,
        " within ", spec.timeout_seconds, " s: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("rank ", spec.rank, " of ", spec.world_size,
                     " could not join the gang at ", spec.store_host, ":",
                     spec.store_port, ": ", e.what()));
  }
  return std::unique_ptr<DataParallel>(
      new DataParallel(spec, device, std::move(handle)));
}

DataParallel::DataParallel(DistributedSpec spec, torch::Device device,
                           std::unique_ptr<ProcessGroupHandle> group)
    : spec_(std::move(spec)), device_(device), group_(std::move(group)) {}

DataParallel::~DataParallel() = default;

const char* DataParallel::backend() const { return "gloo"; }

void DataParallel::BroadcastFlat(const std::vector<torch::Tensor>& tensors,
                                 int root, int64_t bucket_bytes) {
  torch::NoGradGuard no_grad;
  ForEachBucket(tensors, bucket_bytes, [&](torch::Tensor& flat) {
    std::vector<at::Tensor> one{flat};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    group_->gloo->broadcast(one, options)->wait();
  });
}

void DataParallel::Broadcast(const std::vector<torch::Tensor>& tensors,
                             int root) {
  BroadcastFlat(tensors, root, 25 << 20);
}

void DataParallel::AllReduceGradients(const std::vector<torch::Tensor>& params,
                                      int64_t bucket_bytes) {
  torch::NoGradGuard no_grad;
  // Which gradients exist anywhere: a parameter counts as zero where its
  // gradient is missing, and stays without one where it is missing on
  // every rank.
  torch::Tensor defined =
      torch::zeros({static_cast<int64_t>(params.size())}, torch::kFloat32);
  for (size_t i = 0; i < params.size(); ++i) {
    if (params[i].grad().defined()) defined[static_cast<int64_t>(i)] = 1.0f;
  }
  {
    std::vector<at::Tensor> one{defined};
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp::MAX;
    group_->gloo->allreduce(one, options)->wait();
  }
  auto any = defined.accessor<float, 1>();
  std::vector<torch::Tensor> grads;
  for (size_t i = 0; i < params.size(); ++i) {
    if (any[static_cast<int64_t>(i)] == 0.0f) continue;
    torch::Tensor p = params[i];
    if (!p.grad().defined()) {
      p.mutable_grad() = torch::zeros_like(p);
    }
    grads.push_back(p.grad());
  }
  ForEachBucket(grads, bucket_bytes, [&](torch::Tensor& flat) {
    std::vector<at::Tensor> one{flat};
    group_->gloo->allreduce(one)->wait();
  });
}

std::vector<double> DataParallel::SumScalars(
    const std::vector<double>& values) {
  torch::Tensor t = torch::tensor(values, torch::kFloat64);
  std::vector<at::Tensor> one{t};
  group_->gloo->allreduce(one)->wait();
  return std::vector<double>(t.data_ptr<double>(),
                             t.data_ptr<double>() + t.numel());
}

std::vector<int64_t> DataParallel::Flags(const std::vector<int64_t>& values) {
  torch::Tensor t = torch::tensor(values, torch::kInt64);
  std::vector<at::Tensor> one{t};
  c10d::BroadcastOptions options;
  options.rootRank = 0;
  group_->gloo->broadcast(one, options)->wait();
  return std::vector<int64_t>(t.data_ptr<int64_t>(),
                              t.data_ptr<int64_t>() + t.numel());
}

void DataParallel::BroadcastOwned(const std::vector<torch::Tensor>& tensors,
                                  const std::vector<int>& owners) {
  for (int r = 0; r < spec_.world_size; ++r) {
    std::vector<torch::Tensor> owned;
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (owners[i] == r) owned.push_back(tensors[i]);
    }
    if (!owned.empty()) BroadcastFlat(owned, r, 25 << 20);
  }
}

void DataParallel::Barrier() { group_->gloo->barrier()->wait(); }

void GatherMoments(DataParallel& dp, torch::optim::AdamW& optimizer,
                   const std::vector<torch::Tensor>& params,
                   const std::vector<int>& owners) {
  torch::NoGradGuard no_grad;
  for (int r = 1; r < dp.world_size(); ++r) {
    std::vector<size_t> owned;
    for (size_t i = 0; i < params.size(); ++i) {
      if (owners[i] == r) owned.push_back(i);
    }
    if (owned.empty()) continue;
    // First the step counts (0: no state yet), then the moments of the
    // parameters that have some.
    torch::Tensor steps =
        torch::zeros({static_cast<int64_t>(owned.size())}, torch::kInt64);
    if (dp.rank() == r) {
      for (size_t k = 0; k < owned.size(); ++k) {
        const auto* s = FindAdamState(optimizer, params[owned[k]]);
        steps[static_cast<int64_t>(k)] = s == nullptr ? 0 : s->step();
      }
    }
    dp.Broadcast({steps}, r);
    std::vector<torch::Tensor> moments;
    std::vector<std::pair<size_t, int64_t>> stated;  // (param, step)
    for (size_t k = 0; k < owned.size(); ++k) {
      const int64_t step = steps[static_cast<int64_t>(k)].item<int64_t>();
      if (step == 0) continue;
      const torch::Tensor& p = params[owned[k]];
      stated.emplace_back(owned[k], step);
      if (dp.rank() == r) {
        const auto* s = FindAdamState(optimizer, p);
        moments.push_back(s->exp_avg());
        moments.push_back(s->exp_avg_sq());
      } else {
        moments.push_back(torch::zeros_like(p));
        moments.push_back(torch::zeros_like(p));
      }
    }
    if (moments.empty()) continue;
    dp.Broadcast(moments, r);
    if (dp.rank() != 0) continue;
    for (size_t k = 0; k < stated.size(); ++k) {
      auto state = std::make_unique<torch::optim::AdamWParamState>();
      state->step(stated[k].second);
      state->exp_avg(moments[2 * k]);
      state->exp_avg_sq(moments[2 * k + 1]);
      SetAdamState(optimizer, params[stated[k].first], std::move(state));
    }
  }
}

void DropForeignMoments(torch::optim::AdamW& optimizer,
                        const std::vector<torch::Tensor>& params,
                        const std::vector<int>& owners, int rank) {
  for (size_t i = 0; i < params.size(); ++i) {
    if (owners[i] != rank) EraseAdamState(optimizer, params[i]);
  }
}

}  // namespace lathe
