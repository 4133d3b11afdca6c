#include "server/core/store.h"

#include <sqlite3.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "server/core/store_sql.h"

namespace lathe::server {

using store_sql::Parse;
using store_sql::ParseRows;
using store_sql::Stmt;

namespace {

using lathe::v1::Checkpoint;
using lathe::v1::Dataset;
using lathe::v1::Event;
using lathe::v1::Job;
using lathe::v1::Model;

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  state INTEGER NOT NULL,
  owner TEXT NOT NULL,
  team TEXT NOT NULL DEFAULT '',
  request_id TEXT UNIQUE,
  data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state, seq);
CREATE TABLE IF NOT EXISTS events (
  job_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  data BLOB NOT NULL,
  PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attempts (
  job_id TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  worker_id TEXT NOT NULL,
  start_ms INTEGER NOT NULL,
  end_ms INTEGER,
  outcome TEXT,
  error TEXT,
  PRIMARY KEY (job_id, attempt)
) WITHOUT ROWID;
-- Queue estimates read the latest successful runs on every GetJob of a
-- queued job; without this they sort the whole history.
CREATE INDEX IF NOT EXISTS attempts_by_outcome_end ON attempts(outcome, end_ms);
CREATE TABLE IF NOT EXISTS checkpoints (
  job_id TEXT NOT NULL,
  step INTEGER NOT NULL,
  data BLOB NOT NULL,
  PRIMARY KEY (job_id, step)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoint_files (
  sha256 TEXT NOT NULL,
  size INTEGER NOT NULL,
  job_id TEXT NOT NULL,
  step INTEGER NOT NULL,
  name TEXT NOT NULL,
  PRIMARY KEY (job_id, step, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS checkpoint_files_by_sha ON checkpoint_files(sha256);
CREATE TABLE IF NOT EXISTS datasets (
  sha256 TEXT PRIMARY KEY,
  data BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS models (
  name TEXT PRIMARY KEY,
  data BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS model_files (
  name TEXT NOT NULL,
  path TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  size INTEGER NOT NULL,
  PRIMARY KEY (name, path)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS model_files_by_sha ON model_files(sha256);
CREATE TABLE IF NOT EXISTS job_model_files (
  job_id TEXT NOT NULL,
  path TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  size INTEGER NOT NULL,
  PRIMARY KEY (job_id, path)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS job_model_files_by_sha ON job_model_files(sha256);
CREATE TABLE IF NOT EXISTS dataset_teams (
  sha256 TEXT NOT NULL,
  team TEXT NOT NULL,
  name TEXT NOT NULL DEFAULT '',
  create_time_ms INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (sha256, team)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS users (
  name TEXT PRIMARY KEY,
  data BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tokens (
  id TEXT PRIMARY KEY,
  hash TEXT NOT NULL,
  data BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  time_ms INTEGER NOT NULL,
  data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS workers (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  hostname TEXT NOT NULL,
  devices TEXT NOT NULL,
  registered_ms INTEGER NOT NULL
) WITHOUT ROWID;
)sql";

}  // namespace

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

namespace {

absl::StatusOr<sqlite3*> OpenConnection(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(
      path.c_str(), &db,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
      nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::UnavailableError(
        absl::StrCat("cannot open database ", path, ": ", msg));
  }
  sqlite3_busy_timeout(db, 5000);
  return db;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& path) {
  ASSIGN_OR_RETURN(sqlite3 * db, OpenConnection(path));
  auto store = std::unique_ptr<Store>(new Store(db));
  {
    absl::MutexLock lock(&store->mu_);
    // WAL with synchronous=FULL: a commit is fsynced before it returns, so
    // an acknowledged submit survives a crash of the process or the machine.
    RETURN_IF_ERROR(store->Exec("PRAGMA journal_mode=WAL"));
    RETURN_IF_ERROR(store->Exec("PRAGMA synchronous=FULL"));
    RETURN_IF_ERROR(store->Exec("PRAGMA foreign_keys=ON"));
    RETURN_IF_ERROR(store->Exec(kSchema));
    // Databases from before teams: their jobs get the empty team, which
    // only admins see.
    if (!store->Exec("SELECT team FROM jobs LIMIT 0").ok()) {
      RETURN_IF_ERROR(store->Exec(
          "ALTER TABLE jobs ADD COLUMN team TEXT NOT NULL DEFAULT ''"));
    }
    RETURN_IF_ERROR(store->Exec(
        "CREATE INDEX IF NOT EXISTS jobs_by_team ON jobs(team, seq)"));
    // Databases from before each team kept its own name for a dataset: the
    // shared name shows until the team uploads the bytes again.
    if (!store->Exec("SELECT name FROM dataset_teams LIMIT 0").ok()) {
      RETURN_IF_ERROR(
          store->Exec("ALTER TABLE dataset_teams ADD COLUMN name TEXT NOT NULL "
                      "DEFAULT ''"));
      RETURN_IF_ERROR(
          store->Exec("ALTER TABLE dataset_teams ADD COLUMN create_time_ms "
                      "INTEGER NOT NULL DEFAULT 0"));
    }
  }
  // Reads go through a second connection: under WAL they see every
  // committed transaction and never wait for a commit's sync to disk.
  ASSIGN_OR_RETURN(sqlite3 * reader, OpenConnection(path));
  absl::MutexLock lock(&store->read_mu_);
  store->read_db_ = reader;
  if (sqlite3_exec(reader, "PRAGMA query_only=1", nullptr, nullptr, nullptr) !=
      SQLITE_OK) {
    return absl::InternalError(
        absl::StrCat("sqlite: ", sqlite3_errmsg(reader)));
  }
  return store;
}

Store::~Store() {
  {
    absl::MutexLock lock(&read_mu_);
    sqlite3_close(read_db_);
  }
  absl::MutexLock lock(&mu_);
  sqlite3_close(db_);
}

absl::Status Store::Exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    return absl::InternalError(absl::StrCat("sqlite: ", msg));
  }
  return absl::OkStatus();
}

absl::Status Store::WriteJobLocked(const Job& job) {
  Stmt st(db_, "UPDATE jobs SET state=?1, data=?2 WHERE id=?3");
  st.Bind(1, static_cast<int64_t>(job.state()));
  st.BindBlob(2, job.SerializeAsString());
  st.Bind(3, job.id());
  RETURN_IF_ERROR(st.Run());
  if (sqlite3_changes(db_) == 0) {
    return absl::NotFoundError(absl::StrCat("job ", job.id(), " not found"));
  }
  return absl::OkStatus();
}

absl::Status Store::AppendEventsLocked(Job* job, std::vector<Event>* events) {
  if (events == nullptr) return absl::OkStatus();
  const int64_t now = NowMs();
  for (Event& e : *events) {
    e.set_seq(job->last_event_seq() + 1);
    if (e.time_ms() == 0) e.set_time_ms(now);
    job->set_last_event_seq(e.seq());
    Stmt st(db_, "INSERT INTO events(job_id, seq, data) VALUES(?1, ?2, ?3)");
    st.Bind(1, job->id());
    st.Bind(2, e.seq());
    st.BindBlob(3, e.SerializeAsString());
    RETURN_IF_ERROR(st.Run());
  }
  return absl::OkStatus();
}

absl::Status Store::InsertJobLocked(Job* job, const std::string& request_id,
                                    std::vector<Event>* events, int64_t* seq) {
  {
    Stmt st(db_,
            "INSERT INTO jobs(id, state, owner, request_id, data, team) "
            "VALUES(?1, ?2, ?3, ?4, ?5, ?6)");
    st.Bind(1, job->id());
    st.Bind(2, static_cast<int64_t>(job->state()));
    st.Bind(3, job->spec().owner());
    if (request_id.empty()) {
      st.BindNull(4);
    } else {
      st.Bind(4, request_id);
    }
    st.BindBlob(5, job->SerializeAsString());
    st.Bind(6, job->team());
    RETURN_IF_ERROR(st.Run());
    if (seq != nullptr) *seq = sqlite3_last_insert_rowid(db_);
  }
  RETURN_IF_ERROR(AppendEventsLocked(job, events));
  if (job->model_source().kind() == lathe::v1::MODEL_SOURCE_KIND_MANIFEST) {
    for (const auto& f : job->model_source().files()) {
      Stmt pin(db_,
               "INSERT OR REPLACE INTO job_model_files(job_id, path, "
               "sha256, size) VALUES(?1, ?2, ?3, ?4)");
      pin.Bind(1, job->id());
      pin.Bind(2, f.path());
      pin.Bind(3, f.sha256());
      pin.Bind(4, f.size());
      RETURN_IF_ERROR(pin.Run());
    }
  }
  return WriteJobLocked(*job);
}

absl::Status Store::InsertJob(Job* job, const std::string& request_id,
                              std::vector<Event>* events) {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  absl::Status s = InsertJobLocked(job, request_id, events, nullptr);
  if (!s.ok()) {
    Exec("ROLLBACK").IgnoreError();
    return s;
  }
  return Exec("COMMIT");
}

void Store::InsertJobs(std::vector<NewJob>* batch) {
  absl::MutexLock lock(&mu_);
  // Inserting assigns event seqs from the job; a retry starts over.
  std::vector<int64_t> first_seq;
  for (const NewJob& n : *batch) first_seq.push_back(n.job->last_event_seq());
  auto shared = [&]() -> absl::Status {
    RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    for (NewJob& n : *batch) {
      // A savepoint per job: its failure undoes only its own rows.
      absl::Status s = Exec("SAVEPOINT new_job");
      if (s.ok()) {
        n.status = InsertJobLocked(n.job, n.request_id, n.events, &n.seq);
        if (!n.status.ok()) s = Exec("ROLLBACK TO new_job");
      }
      if (s.ok()) s = Exec("RELEASE new_job");
      if (!s.ok()) {
        Exec("ROLLBACK").IgnoreError();
        return s;
      }
    }
    absl::Status s = Exec("COMMIT");
    if (!s.ok()) Exec("ROLLBACK").IgnoreError();
    return s;
  };
  if (shared().ok()) return;
  for (size_t i = 0; i < batch->size(); ++i) {
    NewJob& n = (*batch)[i];
    n.job->set_last_event_seq(first_seq[i]);
    n.status = Exec("BEGIN IMMEDIATE");
    if (!n.status.ok()) continue;
    n.status = InsertJobLocked(n.job, n.request_id, n.events, &n.seq);
    if (n.status.ok()) n.status = Exec("COMMIT");
    if (!n.status.ok()) Exec("ROLLBACK").IgnoreError();
  }
}

absl::Status Store::UpdateJob(Job* job, std::vector<Event>* events) {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  absl::Status s = AppendEventsLocked(job, events);
  if (s.ok()) s = WriteJobLocked(*job);
  if (!s.ok()) {
    Exec("ROLLBACK").IgnoreError();
    return s;
  }
  return Exec("COMMIT");
}

absl::StatusOr<std::vector<Job>> Store::QueryJobs(
    sqlite3* db, const std::string& sql,
    const std::vector<std::string>& text_args,
    const std::vector<int64_t>& int_args, std::vector<int64_t>* seqs) {
  Stmt st(db, sql);
  RETURN_IF_ERROR(st.status());
  int i = 1;
  for (const auto& t : text_args) st.Bind(i++, t);
  for (int64_t v : int_args) st.Bind(i++, v);
  std::vector<Job> out;
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) {
    ASSIGN_OR_RETURN(Job job, Parse<Job>(st.Blob(0), "job"));
    if (seqs) seqs->push_back(st.Int(1));
    out.push_back(std::move(job));
  }
  if (rc != SQLITE_DONE) return st.StepError();
  return out;
}

absl::StatusOr<Job> Store::GetJob(const std::string& id) {
  return GetJob(id, nullptr);
}

absl::StatusOr<Job> Store::GetJob(const std::string& id, int64_t* seq) {
  absl::MutexLock lock(&read_mu_);
  std::vector<int64_t> seqs;
  ASSIGN_OR_RETURN(auto jobs,
                   QueryJobs(read_db_, "SELECT data, seq FROM jobs WHERE id=?1",
                             {id}, {}, &seqs));
  if (jobs.empty()) {
    return absl::NotFoundError(absl::StrCat("job ", id, " not found"));
  }
  if (seq != nullptr) *seq = seqs[0];
  return jobs[0];
}

absl::StatusOr<std::optional<std::string>> Store::JobIdForRequest(
    const std::string& request_id) {
  absl::MutexLock lock(&read_mu_);
  ASSIGN_OR_RETURN(
      auto jobs,
      QueryJobs(read_db_, "SELECT data, seq FROM jobs WHERE request_id=?1",
                {request_id}, {}, nullptr));
  if (jobs.empty()) return std::optional<std::string>();
  return std::optional<std::string>(jobs[0].id());
}

absl::StatusOr<JobPage> Store::ListJobs(const std::vector<int>& states,
                                        const std::string& owner,
                                        const std::optional<std::string>& team,
                                        int limit, int64_t before_seq) {
  absl::MutexLock lock(&read_mu_);
  std::string sql = "SELECT data, seq FROM jobs WHERE";
  std::vector<std::string> text;
  std::vector<int64_t> ints;
  // Text parameters bind first (positions 1..), then integers.
  if (!owner.empty()) {
    sql += " owner = ? AND";
    text.push_back(owner);
  }
  if (team.has_value()) {
    sql += " team = ? AND";
    text.push_back(*team);
  }
  sql += " seq < ?";
  ints.push_back(before_seq > 0 ? before_seq : INT64_MAX);
  if (!states.empty()) {
    sql += " AND state IN (";
    for (size_t i = 0; i < states.size(); ++i) {
      sql += i ? ",?" : "?";
      ints.push_back(states[i]);
    }
    sql += ")";
  }
  sql += " ORDER BY seq DESC LIMIT ?";
  ints.push_back(limit + 1);
  std::vector<int64_t> seqs;
  ASSIGN_OR_RETURN(auto jobs, QueryJobs(read_db_, sql, text, ints, &seqs));
  JobPage page;
  if (static_cast<int>(jobs.size()) > limit) {
    jobs.resize(limit);
    page.next_before_seq = seqs[limit - 1];
  }
  page.jobs = std::move(jobs);
  return page;
}

absl::StatusOr<std::optional<Job>> Store::OldestQueued() {
  absl::MutexLock lock(&read_mu_);
  ASSIGN_OR_RETURN(
      auto jobs,
      QueryJobs(
          read_db_,
          "SELECT data, seq FROM jobs WHERE state=?1 ORDER BY seq LIMIT 1", {},
          {static_cast<int64_t>(lathe::v1::QUEUED)}, nullptr));
  if (jobs.empty()) return std::optional<Job>();
  return std::optional<Job>(jobs[0]);
}

absl::StatusOr<std::vector<Job>> Store::JobsInState(
    int state, std::vector<int64_t>* seqs) {
  absl::MutexLock lock(&read_mu_);
  return QueryJobs(read_db_,
                   "SELECT data, seq FROM jobs WHERE state=?1 ORDER BY seq", {},
                   {state}, seqs);
}

absl::StatusOr<std::map<int, int64_t>> Store::CountJobsByState() {
  absl::MutexLock lock(&read_mu_);
  Stmt st(read_db_, "SELECT state, COUNT(*) FROM jobs GROUP BY state");
  RETURN_IF_ERROR(st.status());
  std::map<int, int64_t> out;
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) {
    out[static_cast<int>(st.Int(0))] = st.Int(1);
  }
  if (rc != SQLITE_DONE) return st.StepError();
  return out;
}

absl::StatusOr<std::vector<Event>> Store::EventsAfter(const std::string& job_id,
                                                      int64_t after_seq,
                                                      int limit) {
  absl::MutexLock lock(&read_mu_);
  Stmt st(read_db_,
          "SELECT data FROM events WHERE job_id=?1 AND seq>?2 ORDER BY seq "
          "LIMIT ?3");
  RETURN_IF_ERROR(st.status());
  st.Bind(1, job_id);
  st.Bind(2, after_seq);
  st.Bind(3, static_cast<int64_t>(limit));
  return ParseRows<Event>(st, "event");
}

absl::Status Store::RecordAttemptStart(const std::string& job_id, int attempt,
                                       const std::string& worker_id,
                                       int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  Stmt st(db_,
          "INSERT OR REPLACE INTO attempts(job_id, attempt, worker_id, "
          "start_ms) VALUES(?1, ?2, ?3, ?4)");
  st.Bind(1, job_id);
  st.Bind(2, static_cast<int64_t>(attempt));
  st.Bind(3, worker_id);
  st.Bind(4, now_ms);
  return st.Run();
}

absl::Status Store::RecordAttemptEnd(const std::string& job_id, int attempt,
                                     const std::string& outcome,
                                     const std::string& error, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  Stmt st(db_,
          "UPDATE attempts SET end_ms=?1, outcome=?2, error=?3 "
          "WHERE job_id=?4 AND attempt=?5");
  st.Bind(1, now_ms);
  st.Bind(2, outcome);
  st.Bind(3, error);
  st.Bind(4, job_id);
  st.Bind(5, static_cast<int64_t>(attempt));
  return st.Run();
}

}  // namespace lathe::server
