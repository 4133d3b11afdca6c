// The store's identity tables: users, API tokens (the hash of each secret,
// never the secret), the audit log, and which teams uploaded each dataset
// (see store.h).
#include <sqlite3.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "server/core/store.h"
#include "server/core/store_sql.h"

namespace lathe::server {

using lathe::v1::ApiToken;
using lathe::v1::AuditEntry;
using lathe::v1::User;
using store_sql::Parse;
using store_sql::ParseRows;
using store_sql::Stmt;

absl::Status Store::AddDatasetTeam(const std::string& sha256,
                                   const std::string& team,
                                   const std::string& name,
                                   int64_t create_time_ms) {
  absl::MutexLock lock(&mu_);
  Stmt st(db_,
          "INSERT OR IGNORE INTO dataset_teams(sha256, team, name, "
          "create_time_ms) VALUES(?1, ?2, ?3, ?4)");
  st.Bind(1, sha256);
  st.Bind(2, team);
  st.Bind(3, name);
  st.Bind(4, create_time_ms);
  return st.Run();
}

namespace {
// The dataset row in column 0 with the team's name (1) and time (2).
absl::StatusOr<lathe::v1::Dataset> TeamView(Stmt& st) {
  ASSIGN_OR_RETURN(auto d, Parse<lathe::v1::Dataset>(st.Blob(0), "dataset"));
  const std::string name = st.Blob(1);
  if (!name.empty()) d.set_name(name);
  if (st.Int(2) > 0) d.set_create_time_ms(st.Int(2));
  return d;
}
}  // namespace

absl::StatusOr<std::optional<lathe::v1::Dataset>> Store::GetTeamDataset(
    const std::string& sha256, const std::optional<std::string>& team) {
  absl::MutexLock lock(&read_mu_);
  Stmt st(read_db_,
          team.has_value()
              ? "SELECT d.data, t.name, t.create_time_ms FROM datasets d "
                "JOIN dataset_teams t ON d.sha256 = t.sha256 "
                "WHERE d.sha256 = ?1 AND t.team = ?2"
              : "SELECT d.data, t.name, MIN(t.create_time_ms) FROM datasets d "
                "JOIN dataset_teams t ON d.sha256 = t.sha256 "
                "WHERE d.sha256 = ?1 GROUP BY d.sha256");
  RETURN_IF_ERROR(st.status());
  st.Bind(1, sha256);
  if (team.has_value()) st.Bind(2, *team);
  const int rc = st.Step();
  if (rc == SQLITE_DONE) return std::optional<lathe::v1::Dataset>();
  if (rc != SQLITE_ROW) return st.StepError();
  ASSIGN_OR_RETURN(auto d, TeamView(st));
  return std::optional<lathe::v1::Dataset>(std::move(d));
}

absl::StatusOr<std::vector<lathe::v1::Dataset>> Store::ListDatasets(
    const std::optional<std::string>& team) {
  absl::MutexLock lock(&read_mu_);
  Stmt st(read_db_,
          team.has_value()
              ? "SELECT d.data, t.name, t.create_time_ms FROM datasets d "
                "JOIN dataset_teams t ON d.sha256 = t.sha256 WHERE t.team = ?1"
              : "SELECT d.data, t.name, MIN(t.create_time_ms) FROM datasets d "
                "JOIN dataset_teams t ON d.sha256 = t.sha256 "
                "GROUP BY d.sha256");
  RETURN_IF_ERROR(st.status());
  if (team.has_value()) st.Bind(1, *team);
  std::vector<lathe::v1::Dataset> out;
  while (true) {
    const int rc = st.Step();
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return st.StepError();
    ASSIGN_OR_RETURN(auto d, TeamView(st));
    out.push_back(std::move(d));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.create_time_ms() != b.create_time_ms()
               ? a.create_time_ms() > b.create_time_ms()
               : a.sha256() < b.sha256();
  });
  return out;
}

absl::Status Store::RemoveDatasetTeam(const std::string& sha256,
                                      const std::optional<std::string>& team) {
  absl::MutexLock lock(&mu_);
  Stmt st(db_, team.has_value()
                   ? "DELETE FROM dataset_teams WHERE sha256=?1 AND team=?2"
                   : "DELETE FROM dataset_teams WHERE sha256=?1");
  st.Bind(1, sha256);
  if (team.has_value()) st.Bind(2, *team);
  return st.Run();
}

absl::StatusOr<int64_t> Store::JobSeq(const std::string& id) {
  absl::MutexLock lock(&read_mu_);
  Stmt st(read_db_, "SELECT seq FROM jobs WHERE id=?1");
  RETURN_IF_ERROR(st.status());
  st.Bind(1, id);
  const int rc = st.Step();
  if (rc == SQLITE_DONE) {
    return absl::NotFoundError(absl::StrCat("job ", id, " not found"));
  }
  if (rc != SQLITE_ROW) return st.StepError();
  return st.Int(0);
}

absl::Status Store::PutUser(const User& user) {
  absl::MutexLock lock(&mu_);
  Stmt st(db_, "INSERT OR REPLACE INTO users(name, data) VALUES(?1, ?2)");
  st.Bind(1, user.name());
  st.BindBlob(2, user.SerializeAsString());
  return st.Run();
}

absl::StatusOr<std::vector<User>> Store::Users() {
  absl::MutexLock lock(&read_mu_);
  Stmt st(read_db_, "SELECT data FROM users ORDER BY name");
  return ParseRows<User>(st, "user");
}

absl::Status Store::PutToken(const ApiToken& token, const std::string& hash) {
  absl::MutexLock lock(&mu_);
  Stmt st(db_, "INSERT INTO tokens(id, hash, data) VALUES(?1, ?2, ?3)");
  st.Bind(1, token.id());
  st.Bind(2, hash);
  st.BindBlob(3, token.SerializeAsString());
  return st.Run();
}

absl::Status Store::UpdateToken(const ApiToken& token) {
  absl::MutexLock lock(&mu_);
  Stmt st(db_, "UPDATE tokens SET data=?2 WHERE id=?1");
  st.Bind(1, token.id());
  st.BindBlob(2, token.SerializeAsString());
  return st.Run();
}

absl::StatusOr<std::vector<Store::TokenRow>> Store::Tokens() {
  absl::MutexLock lock(&read_mu_);
  Stmt st(read_db_, "SELECT data, hash FROM tokens ORDER BY id");
  RETURN_IF_ERROR(st.status());
  std::vector<TokenRow> out;
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) {
    ASSIGN_OR_RETURN(ApiToken t, Parse<ApiToken>(st.Blob(0), "token"));
    out.push_back(TokenRow{std::move(t), st.Blob(1)});
  }
  if (rc != SQLITE_DONE) return st.StepError();
  return out;
}

absl::Status Store::AppendAudit(std::vector<AuditEntry>* entries,
                                int64_t keep_after_ms, int64_t keep_rows) {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto body = [&]() -> absl::Status {
    for (auto& e : *entries) {
      Stmt st(db_, "INSERT INTO audit(time_ms, data) VALUES(?1, ?2)");
      st.Bind(1, e.time_ms());
      st.BindBlob(2, e.SerializeAsString());
      RETURN_IF_ERROR(st.Run());
      e.set_seq(sqlite3_last_insert_rowid(db_));
    }
    Stmt old(db_, "DELETE FROM audit WHERE time_ms < ?1");
    old.Bind(1, keep_after_ms);
    RETURN_IF_ERROR(old.Run());
    Stmt many(db_,
              "DELETE FROM audit WHERE seq <= "
              "(SELECT MAX(seq) FROM audit) - ?1");
    many.Bind(1, keep_rows);
    return many.Run();
  };
  absl::Status s = body();
  if (!s.ok()) {
    Exec("ROLLBACK").IgnoreError();
    return s;
  }
  return Exec("COMMIT");
}

absl::StatusOr<std::vector<AuditEntry>> Store::Audit(int limit,
                                                     int64_t before_seq) {
  absl::MutexLock lock(&read_mu_);
  Stmt st(read_db_,
          "SELECT data, seq FROM audit WHERE seq < ?1 ORDER BY seq DESC "
          "LIMIT ?2");
  RETURN_IF_ERROR(st.status());
  st.Bind(1, before_seq > 0 ? before_seq : INT64_MAX);
  st.Bind(2, static_cast<int64_t>(limit));
  std::vector<AuditEntry> out;
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) {
    ASSIGN_OR_RETURN(AuditEntry e, Parse<AuditEntry>(st.Blob(0), "audit"));
    e.set_seq(st.Int(1));
    out.push_back(std::move(e));
  }
  if (rc != SQLITE_DONE) return st.StepError();
  return out;
}

}  // namespace lathe::server
