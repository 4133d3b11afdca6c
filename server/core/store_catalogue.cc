// The store's catalogue tables: checkpoints and the blobs they refer to,
// datasets, stored models with their pins, and workers (see store.h).
#include <sqlite3.h>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "server/core/store.h"
#include "server/core/store_sql.h"

namespace lathe::server {

using lathe::v1::Checkpoint;
using lathe::v1::Dataset;
using lathe::v1::Model;
using store_sql::Parse;
using store_sql::ParseRows;
using store_sql::Stmt;

absl::Status Store::PutCheckpoint(const std::string& job_id,
                                  const Checkpoint& checkpoint) {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto body = [&]() -> absl::Status {
    Stmt st(db_,
            "INSERT OR REPLACE INTO checkpoints(job_id, step, data) "
            "VALUES(?1, ?2, ?3)");
    st.Bind(1, job_id);
    st.Bind(2, checkpoint.step());
    st.BindBlob(3, checkpoint.SerializeAsString());
    RETURN_IF_ERROR(st.Run());
    for (const auto& f : checkpoint.files()) {
      Stmt ref(db_,
               "INSERT OR REPLACE INTO checkpoint_files(sha256, size, job_id, "
               "step, name) VALUES(?1, ?2, ?3, ?4, ?5)");
      ref.Bind(1, f.sha256());
      ref.Bind(2, f.size());
      ref.Bind(3, job_id);
      ref.Bind(4, checkpoint.step());
      ref.Bind(5, f.name());
      RETURN_IF_ERROR(ref.Run());
    }
    return absl::OkStatus();
  };
  absl::Status s = body();
  if (!s.ok()) {
    Exec("ROLLBACK").IgnoreError();
    return s;
  }
  return Exec("COMMIT");
}

absl::Status Store::DeleteCheckpoint(const std::string& job_id, int64_t step) {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  absl::Status s;
  for (const char* sql :
       {"DELETE FROM checkpoints WHERE job_id=?1 AND step=?2",
        "DELETE FROM checkpoint_files WHERE job_id=?1 AND step=?2"}) {
    Stmt st(db_, sql);
    st.Bind(1, job_id);
    st.Bind(2, step);
    s.Update(st.Run());
  }
  if (!s.ok()) {
    Exec("ROLLBACK").IgnoreError();
    return s;
  }
  return Exec("COMMIT");
}

absl::StatusOr<bool> Store::BlobReferenced(const std::string& sha256) {
  absl::MutexLock lock(&read_mu_);
  Stmt st(read_db_,
          "SELECT (SELECT COUNT(*) FROM checkpoint_files WHERE sha256=?1) + "
          "(SELECT COUNT(*) FROM datasets WHERE sha256=?1) + "
          "(SELECT COUNT(*) FROM model_files WHERE sha256=?1) + "
          "(SELECT COUNT(*) FROM job_model_files WHERE sha256=?1)");
  RETURN_IF_ERROR(st.status());
  st.Bind(1, sha256);
  if (st.Step() != SQLITE_ROW) return st.StepError();
  return st.Int(0) > 0;
}

absl::StatusOr<bool> Store::ModelBlobReferenced(const std::string& sha256) {
  absl::MutexLock lock(&read_mu_);
  Stmt st(read_db_,
          "SELECT (SELECT COUNT(*) FROM model_files WHERE sha256=?1) + "
          "(SELECT COUNT(*) FROM job_model_files WHERE sha256=?1)");
  RETURN_IF_ERROR(st.status());
  st.Bind(1, sha256);
  if (st.Step() != SQLITE_ROW) return st.StepError();
  return st.Int(0) > 0;
}

absl::StatusOr<int64_t> Store::StoredBytes() {
  absl::MutexLock lock(&read_mu_);
  int64_t total = 0;
  {
    Stmt st(read_db_,
            "SELECT COALESCE(SUM(size), 0) FROM (SELECT MAX(size) AS size "
            "FROM (SELECT sha256, size FROM checkpoint_files UNION ALL "
            "SELECT sha256, size FROM model_files UNION ALL "
            "SELECT sha256, size FROM job_model_files) GROUP BY sha256)");
    RETURN_IF_ERROR(st.status());
    if (st.Step() != SQLITE_ROW) return st.StepError();
    total += st.Int(0);
  }
  Stmt st(read_db_, "SELECT data FROM datasets");
  ASSIGN_OR_RETURN(auto datasets, ParseRows<Dataset>(st, "dataset"));
  for (const Dataset& d : datasets) total += d.size();
  return total;
}

absl::StatusOr<std::vector<int64_t>> Store::RecentRunTimesMs(int limit) {
  absl::MutexLock lock(&read_mu_);
  Stmt st(read_db_,
          "SELECT end_ms - start_ms FROM attempts WHERE outcome='SUCCEEDED' "
          "ORDER BY end_ms DESC LIMIT ?1");
  RETURN_IF_ERROR(st.status());
  st.Bind(1, static_cast<int64_t>(limit));
  std::vector<int64_t> out;
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) out.push_back(st.Int(0));
  if (rc != SQLITE_DONE) return st.StepError();
  return out;
}

absl::StatusOr<std::vector<Checkpoint>> Store::Checkpoints(
    const std::string& job_id) {
  absl::MutexLock lock(&read_mu_);
  Stmt st(read_db_,
          "SELECT data FROM checkpoints WHERE job_id=?1 ORDER BY step");
  RETURN_IF_ERROR(st.status());
  st.Bind(1, job_id);
  return ParseRows<Checkpoint>(st, "checkpoint");
}

absl::Status Store::PutDataset(const Dataset& dataset) {
  absl::MutexLock lock(&mu_);
  Stmt st(db_, "INSERT OR REPLACE INTO datasets(sha256, data) VALUES(?1, ?2)");
  st.Bind(1, dataset.sha256());
  st.BindBlob(2, dataset.SerializeAsString());
  return st.Run();
}

absl::StatusOr<std::optional<Dataset>> Store::GetDataset(
    const std::string& sha256) {
  absl::MutexLock lock(&read_mu_);
  Stmt st(read_db_, "SELECT data FROM datasets WHERE sha256=?1");
  RETURN_IF_ERROR(st.status());
  st.Bind(1, sha256);
  int rc = st.Step();
  if (rc == SQLITE_DONE) return std::optional<Dataset>();
  if (rc != SQLITE_ROW) return st.StepError();
  ASSIGN_OR_RETURN(Dataset d, Parse<Dataset>(st.Blob(0), "dataset"));
  return std::optional<Dataset>(std::move(d));
}

absl::Status Store::PutModel(const Model& model) {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto body = [&]() -> absl::Status {
    {
      Stmt del(db_, "DELETE FROM model_files WHERE name=?1");
      del.Bind(1, model.name());
      RETURN_IF_ERROR(del.Run());
    }
    Stmt st(db_, "INSERT OR REPLACE INTO models(name, data) VALUES(?1, ?2)");
    st.Bind(1, model.name());
    st.BindBlob(2, model.SerializeAsString());
    RETURN_IF_ERROR(st.Run());
    for (const auto& f : model.files()) {
      Stmt ref(db_,
               "INSERT INTO model_files(name, path, sha256, size) "
               "VALUES(?1, ?2, ?3, ?4)");
      ref.Bind(1, model.name());
      ref.Bind(2, f.path());
      ref.Bind(3, f.sha256());
      ref.Bind(4, f.size());
      RETURN_IF_ERROR(ref.Run());
    }
    return absl::OkStatus();
  };
  absl::Status s = body();
  if (!s.ok()) {
    Exec("ROLLBACK").IgnoreError();
    return s;
  }
  return Exec("COMMIT");
}

absl::StatusOr<std::optional<Model>> Store::GetModel(const std::string& name) {
  absl::MutexLock lock(&read_mu_);
  Stmt st(read_db_, "SELECT data FROM models WHERE name=?1");
  st.Bind(1, name);
  ASSIGN_OR_RETURN(auto rows, ParseRows<Model>(st, "model"));
  if (rows.empty()) return std::optional<Model>();
  return std::optional<Model>(std::move(rows[0]));
}

absl::StatusOr<std::vector<Model>> Store::ListModels() {
  absl::MutexLock lock(&read_mu_);
  Stmt st(read_db_, "SELECT data FROM models ORDER BY name");
  return ParseRows<Model>(st, "model");
}

absl::Status Store::DeleteModel(const std::string& name) {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  absl::Status s;
  int changed = 0;
  {
    Stmt st(db_, "DELETE FROM models WHERE name=?1");
    st.Bind(1, name);
    s.Update(st.Run());
    changed = sqlite3_changes(db_);
  }
  {
    Stmt st(db_, "DELETE FROM model_files WHERE name=?1");
    st.Bind(1, name);
    s.Update(st.Run());
  }
  if (s.ok() && changed == 0) {
    s = absl::NotFoundError(absl::StrCat("model ", name, " not found"));
  }
  if (!s.ok()) {
    Exec("ROLLBACK").IgnoreError();
    return s;
  }
  return Exec("COMMIT");
}

absl::StatusOr<std::vector<std::string>> Store::ReleaseJobModel(
    const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> shas;
  {
    Stmt st(db_, "SELECT sha256 FROM job_model_files WHERE job_id=?1");
    RETURN_IF_ERROR(st.status());
    st.Bind(1, job_id);
    int rc;
    while ((rc = st.Step()) == SQLITE_ROW) shas.push_back(st.Blob(0));
    if (rc != SQLITE_DONE) return st.StepError();
  }
  if (shas.empty()) return shas;
  Stmt del(db_, "DELETE FROM job_model_files WHERE job_id=?1");
  del.Bind(1, job_id);
  RETURN_IF_ERROR(del.Run());
  return shas;
}

absl::Status Store::PutWorker(const std::string& id, const std::string& name,
                              const std::string& hostname,
                              const std::string& devices, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  Stmt st(db_,
          "INSERT OR REPLACE INTO workers(id, name, hostname, devices, "
          "registered_ms) VALUES(?1, ?2, ?3, ?4, ?5)");
  st.Bind(1, id);
  st.Bind(2, name);
  st.Bind(3, hostname);
  st.Bind(4, devices);
  st.Bind(5, now_ms);
  return st.Run();
}

}  // namespace lathe::server
