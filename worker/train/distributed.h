// Data-parallel training across processes on LibTorch's c10d: one process
// (rank) per device, a TCPStore on rank 0 for the rendezvous, Gloo between
// CPU processes (and NCCL between CUDA devices where the LibTorch in use was
// built with it). LibTorch.
//
// What the training loop does with it (trainer.cc):
// - rank 0's parameters and buffers are broadcast once, so every rank starts
//   from the same weights;
// - each micro-batch of the global batch is split by rank (SplitRows), each
//   rank weights its loss by its share of the step's rows, and the gradients
//   are summed over the ranks in buckets (AllReduceGradients): the sum is
//   the gradient of the whole global batch, as on one device;
// - with optimizer-state sharding (zero_stage=1) each rank keeps the AdamW
//   moments of the parameters it owns (ShardOwners), updates those alone and
//   broadcasts them afterwards (BroadcastOwned);
// - rank 0 evaluates, writes checkpoints and reports; the others follow its
//   decisions (Flags).
//
// Every collective call blocks until all ranks have made it; a rank that
// dies makes the others' next call fail (c10d raises, the training child
// exits), which stops the whole gang.
#ifndef LATHE_WORKER_TRAIN_DISTRIBUTED_H_
#define LATHE_WORKER_TRAIN_DISTRIBUTED_H_

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/train/distributed_spec.h"

namespace lathe {

// The rows [begin, end) of a global micro-batch that `rank` of `world`
// trains on: contiguous slices as even as possible, the first ranks taking
// the remainder (a rank's slice may be empty).
std::pair<size_t, size_t> SplitRows(size_t begin, size_t end, int rank,
                                    int world);

// The rank that owns each tensor under optimizer-state sharding: whole
// tensors, largest first (ties in order), each to the rank with the fewest
// elements so far (ties to the lower rank), so every rank computes the same
// answer.
std::vector<int> ShardOwners(const std::vector<torch::Tensor>& tensors,
                             int world);

class ProcessGroupHandle;

class DataParallel {
 public:
  // Joins the gang: rank 0 starts the store and every rank connects. Fails
  // (UNAVAILABLE) when the others do not arrive within the timeout.
  static absl::StatusOr<std::unique_ptr<DataParallel>> Connect(
      const DistributedSpec& spec, const torch::Device& device);
  ~DataParallel();

  int rank() const { return spec_.rank; }
  int world_size() const { return spec_.world_size; }
  const char* backend() const;

  // Replaces every rank's tensors with rank `root`'s, in buckets.
  void Broadcast(const std::vector<torch::Tensor>& tensors, int root);
  // Sums the gradients of `params` over the ranks, in place, in buckets of
  // about `bucket_bytes`. A parameter whose gradient is undefined on some
  // ranks (an empty slice, an unused head) counts as zero there; one
  // undefined on every rank stays undefined, as on one device.
  void AllReduceGradients(const std::vector<torch::Tensor>& params,
                          int64_t bucket_bytes = 25 << 20);
  // Sums each value over the ranks.
  std::vector<double> SumScalars(const std::vector<double>& values);
  // Rank 0's `values` on every rank (decisions only rank 0 can make).
  std::vector<int64_t> Flags(const std::vector<int64_t>& values);
  // After each rank has stepped the tensors it owns: each owner's tensors
  // to every rank.
  void BroadcastOwned(const std::vector<torch::Tensor>& tensors,
                      const std::vector<int>& owners);
  // Waits until every rank has arrived.
  void Barrier();

 private:
  DataParallel(DistributedSpec spec, torch::Device device,
               std::unique_ptr<ProcessGroupHandle> group);
  void BroadcastFlat(const std::vector<torch::Tensor>& tensors, int root,
                     int64_t bucket_bytes);

  DistributedSpec spec_;
  torch::Device device_;
  std::unique_ptr<ProcessGroupHandle> group_;
};

// zero_stage=1 around a checkpoint (every rank calls it): rank 0 receives
// the AdamW state of each of `params` that another rank owns.
void GatherMoments(DataParallel& dp, torch::optim::AdamW& optimizer,
                   const std::vector<torch::Tensor>& params,
                   const std::vector<int>& owners);

// Forgets the AdamW state of each of `params` that `rank` does not own.
void DropForeignMoments(torch::optim::AdamW& optimizer,
                        const std::vector<torch::Tensor>& params,
                        const std::vector<int>& owners, int rank);

}  // namespace lathe

#endif  // LATHE_WORKER_TRAIN_DISTRIBUTED_H_
