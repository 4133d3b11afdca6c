// Durable state of the server in one SQLite database (WAL, synchronous=FULL):
// jobs, their events, attempts, checkpoints, datasets, stored models, the
// model files each unfinished job pinned, and workers. Rows hold
// the serialized protobuf message next to the columns that queries filter on.
//
// Thread safety: every method may be called from any thread. Writes are
// serialized on one connection, reads on a second one, so a read never waits
// for a write's sync to disk and sees every write that has returned.
#ifndef LATHE_SERVER_CORE_STORE_H_
#define LATHE_SERVER_CORE_STORE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "lathe/v1/lathe.pb.h"

struct sqlite3;

namespace lathe::server {

struct JobPage {
  std::vector<lathe::v1::Job> jobs;
  // Creation sequence of the last job returned; 0 when there are no more.
  int64_t next_before_seq = 0;
};

class Store {
 public:
  // Opens (creating if needed) the database at `path` and its schema.
  static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& path);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Inserts a new job with its first events in one transaction. `request_id`
  // may be empty; a non-empty one is unique (ALREADY_EXISTS on a repeat).
  // The files of a manifest job->model_source() are pinned to the job in the
  // same transaction (see ReleaseJobModel).
  // Assigns seq and time to `events` and sets job->last_event_seq.
  absl::Status InsertJob(lathe::v1::Job* job, const std::string& request_id,
                         std::vector<lathe::v1::Event>* events);
  // One job of InsertJobs: the arguments of InsertJob and its outcome.
  struct NewJob {
    lathe::v1::Job* job = nullptr;
    std::string request_id;
    std::vector<lathe::v1::Event>* events = nullptr;
    absl::Status status;
    // The job's creation sequence (the queue's age order), once stored.
    int64_t seq = 0;
  };
  // Inserts each job as InsertJob would, all in one transaction, so that a
  // batch costs one sync to disk. Sets each `status`: a job that fails (a
  // request_id already used, by an earlier job or one before it in the
  // batch) is rolled back alone and the others are stored. When the shared
  // transaction itself fails, each job is tried again in its own.
  void InsertJobs(std::vector<NewJob>* batch);
  // Writes `job` and appends `events` (may be empty) in one transaction.
  absl::Status UpdateJob(lathe::v1::Job* job,
                         std::vector<lathe::v1::Event>* events);
  // NOT_FOUND when there is no such job.
  absl::StatusOr<lathe::v1::Job> GetJob(const std::string& id);
  // GetJob that also returns the job's creation sequence in `seq`.
  absl::StatusOr<lathe::v1::Job> GetJob(const std::string& id, int64_t* seq);
  absl::StatusOr<std::optional<std::string>> JobIdForRequest(
      const std::string& request_id);
  // Newest first, jobs created before `before_seq` (0: from the newest);
  // only `owner`'s when not empty, only `team`'s when set.
  absl::StatusOr<JobPage> ListJobs(const std::vector<int>& states,
                                   const std::string& owner,
                                   const std::optional<std::string>& team,
                                   int limit, int64_t before_seq);
  // The oldest QUEUED job, if any.
  absl::StatusOr<std::optional<lathe::v1::Job>> OldestQueued();
  // Oldest first; `seqs` (may be null) receives each job's creation sequence.
  absl::StatusOr<std::vector<lathe::v1::Job>> JobsInState(
      int state, std::vector<int64_t>* seqs = nullptr);
  absl::StatusOr<std::map<int, int64_t>> CountJobsByState();

  // Events with seq > after_seq, oldest first, at most `limit`.
  absl::StatusOr<std::vector<lathe::v1::Event>> EventsAfter(
      const std::string& job_id, int64_t after_seq, int limit);

  absl::Status RecordAttemptStart(const std::string& job_id, int attempt,
                                  const std::string& worker_id, int64_t now_ms);
  absl::Status RecordAttemptEnd(const std::string& job_id, int attempt,
                                const std::string& outcome,
                                const std::string& error, int64_t now_ms);

  // Stores the checkpoint and a reference to each of its files' blobs.
  absl::Status PutCheckpoint(const std::string& job_id,
                             const lathe::v1::Checkpoint& checkpoint);
  absl::Status DeleteCheckpoint(const std::string& job_id, int64_t step);
  // True while a checkpoint, a dataset, a stored model or a job's pinned
  // model refers to the blob.
  absl::StatusOr<bool> BlobReferenced(const std::string& sha256);
  // True while a stored model or a job's pinned model refers to the blob.
  absl::StatusOr<bool> ModelBlobReferenced(const std::string& sha256);
  // Bytes of all distinct blobs that checkpoints, datasets and models refer
  // to.
  absl::StatusOr<int64_t> StoredBytes();
  // Run times in ms of the most recent successful attempts, newest first.
  absl::StatusOr<std::vector<int64_t>> RecentRunTimesMs(int limit);
  // Ordered by step.
  absl::StatusOr<std::vector<lathe::v1::Checkpoint>> Checkpoints(
      const std::string& job_id);

  absl::Status PutDataset(const lathe::v1::Dataset& dataset);
  // Records that `team` uploaded the dataset (datasets are shared by
  // content, visible to the teams that uploaded the bytes).
  // The first upload by a team names the dataset for that team, and dates
  // it: another team's name for the same bytes is never shown to it.
  absl::Status AddDatasetTeam(const std::string& sha256,
                              const std::string& team,
                              const std::string& name = "",
                              int64_t create_time_ms = 0);
  // The dataset as `team` uploaded it (its name and time), or as its
  // first uploader did when nullopt; nullopt when no such team has it.
  absl::StatusOr<std::optional<lathe::v1::Dataset>> GetTeamDataset(
      const std::string& sha256, const std::optional<std::string>& team);
  absl::StatusOr<std::optional<lathe::v1::Dataset>> GetDataset(
      const std::string& sha256);
  // The datasets `team` uploaded (every dataset when nullopt), newest first.
  absl::StatusOr<std::vector<lathe::v1::Dataset>> ListDatasets(
      const std::optional<std::string>& team);
  // Takes the dataset off `team`'s list (every team's when nullopt).
  absl::Status RemoveDatasetTeam(const std::string& sha256,
                                 const std::optional<std::string>& team);
  // The list position of job `id` (ListJobs' before_seq); NOT_FOUND.
  absl::StatusOr<int64_t> JobSeq(const std::string& id);

  // Stores `model` under model.name(), replacing a model of that name, with a
  // reference to each of its files' blobs, in one transaction.
  absl::Status PutModel(const lathe::v1::Model& model);
  absl::StatusOr<std::optional<lathe::v1::Model>> GetModel(
      const std::string& name);
  // Sorted by name.
  absl::StatusOr<std::vector<lathe::v1::Model>> ListModels();
  // NOT_FOUND when there is no such model.
  absl::Status DeleteModel(const std::string& name);
  // Drops the job's pins on its model files (once it can no longer run).
  // Returns the digests that were pinned.
  absl::StatusOr<std::vector<std::string>> ReleaseJobModel(
      const std::string& job_id);

  // ---- Identities (store_identities.cc) ----
  struct TokenRow {
    lathe::v1::ApiToken token;
    std::string hash;  // Hex SHA-256 of the secret.
  };
  absl::Status PutUser(const lathe::v1::User& user);
  absl::StatusOr<std::vector<lathe::v1::User>> Users();
  absl::Status PutToken(const lathe::v1::ApiToken& token,
                        const std::string& hash);
  // Updates a token's row (revocation, last use); the hash stays.
  absl::Status UpdateToken(const lathe::v1::ApiToken& token);
  absl::StatusOr<std::vector<TokenRow>> Tokens();
  // Appends, assigning each entry's seq; drops entries older than
  // `keep_after_ms` and beyond the newest `keep_rows`.
  absl::Status AppendAudit(std::vector<lathe::v1::AuditEntry>* entries,
                           int64_t keep_after_ms, int64_t keep_rows);
  // Newest first, entries with seq < before_seq (0: from the newest).
  absl::StatusOr<std::vector<lathe::v1::AuditEntry>> Audit(int limit,
                                                           int64_t before_seq);

  absl::Status PutWorker(const std::string& id, const std::string& name,
                         const std::string& hostname,
                         const std::string& devices, int64_t now_ms);

 private:
  explicit Store(sqlite3* db) : db_(db) {}
  absl::Status Exec(const char* sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status WriteJobLocked(const lathe::v1::Job& job)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The writes of InsertJob, inside a transaction the caller runs.
  absl::Status InsertJobLocked(lathe::v1::Job* job,
                               const std::string& request_id,
                               std::vector<lathe::v1::Event>* events,
                               int64_t* seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status AppendEventsLocked(lathe::v1::Job* job,
                                  std::vector<lathe::v1::Event>* events)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Jobs from `db`, whose mutex the caller holds.
  static absl::StatusOr<std::vector<lathe::v1::Job>> QueryJobs(
      sqlite3* db, const std::string& sql,
      const std::vector<std::string>& text_args,
      const std::vector<int64_t>& int_args, std::vector<int64_t>* seqs);

  // The writing connection.
  absl::Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
  // The reading connection.
  absl::Mutex read_mu_;
  sqlite3* read_db_ ABSL_GUARDED_BY(read_mu_) = nullptr;
};

int64_t NowMs();

}  // namespace lathe::server

#endif  // LATHE_SERVER_CORE_STORE_H_
