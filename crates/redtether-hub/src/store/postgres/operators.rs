//! Operator accounts, API tokens and login sessions. An account is kept whole (jsonb) with its
//! setup code's digest beside it; a change locks the row (`FOR UPDATE`) and writes it back in
//! the same transaction. Tokens and sessions go with their account (`ON DELETE CASCADE`).

use super::super::domain::Operators;
use super::super::{ApiTokenRecord, OperatorRecord, SessionRecord, SetupCode, StoreError};
use super::{PgStore, from_json, to_json};
use crate::identity::TokenScope;
use crate::identity::secrets::{digest, random_secret};

fn setup_digest(record: &OperatorRecord) -> Option<&str> {
    record.setup.as_ref().map(|s| s.sha256.as_str())
}

impl Operators for PgStore {
    fn add_operator(&self, record: OperatorRecord, setup_secs: u64) -> Result<String, StoreError> {
        let code = random_secret("rtsetup_");
        let mut record = record;
        record.setup = Some(SetupCode { sha256: digest(&code), expires: record.created.saturating_add(setup_secs) });
        let added = self.wait(async {
            self.client()
                .await?
                .execute(
                    "INSERT INTO operators (name, setup_sha256, record) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO NOTHING",
                    &[&record.name, &setup_digest(&record), &to_json(&record)],
                )
                .await
                .map_err(StoreError::from)
        })?;
        if added == 0 {
            return Err(StoreError::Conflict(format!("an operator named {:?} exists (remove it first)", record.name)));
        }
        Ok(code)
    }

    fn operator(&self, name: &str) -> Result<Option<OperatorRecord>, StoreError> {
        let row = self.wait(async {
            self.client()
                .await?
                .query_opt("SELECT record FROM operators WHERE name = $1", &[&name])
                .await
                .map_err(StoreError::from)
        })?;
        row.map(|r| from_json(r.get(0))).transpose()
    }

    fn operators(&self) -> Result<Vec<OperatorRecord>, StoreError> {
        let rows = self.wait(async {
            self.client()
                .await?
                .query("SELECT record FROM operators ORDER BY name", &[])
                .await
                .map_err(StoreError::from)
        })?;
        rows.into_iter().map(|r| from_json(r.get(0))).collect()
    }

    fn modify_operator(
        &self,
        name: &str,
        change: &mut (dyn for<'r> FnMut(&'r mut OperatorRecord) + Send),
    ) -> Result<Option<OperatorRecord>, StoreError> {
        self.wait(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let Some(row) = tx.query_opt("SELECT record FROM operators WHERE name = $1 FOR UPDATE", &[&name]).await?
            else {
                return Ok(None);
            };
            let mut record: OperatorRecord = from_json(row.get(0))?;
            change(&mut record);
            record.name = name.to_string();
            tx.execute(
                "UPDATE operators SET setup_sha256 = $2, record = $3 WHERE name = $1",
                &[&name, &setup_digest(&record), &to_json(&record)],
            )
            .await?;
            tx.commit().await?;
            Ok(Some(record))
        })
    }

    fn remove_operator(&self, name: &str) -> Result<OperatorRecord, StoreError> {
        let row = self.wait(async {
            self.client()
                .await?
                .query_opt("DELETE FROM operators WHERE name = $1 RETURNING record", &[&name])
                .await
                .map_err(StoreError::from)
        })?;
        match row {
            Some(row) => from_json(row.get(0)),
            None => Err(StoreError::Conflict(format!("no operator named {name:?}"))),
        }
    }

    fn operator_by_setup_code(&self, code: &str, now: u64) -> Result<Option<OperatorRecord>, StoreError> {
        // Looked up by the code's digest: what an index compares is a hash of a random secret.
        let presented = digest(code);
        let row = self.wait(async {
            self.client()
                .await?
                .query_opt("SELECT record FROM operators WHERE setup_sha256 = $1", &[&presented])
                .await
                .map_err(StoreError::from)
        })?;
        let record: Option<OperatorRecord> = row.map(|r| from_json(r.get(0))).transpose()?;
        Ok(record.filter(|r| r.setup.as_ref().is_some_and(|s| now < s.expires)))
    }

    fn add_api_token(
        &self,
        operator: &str,
        name: &str,
        scope: TokenScope,
        now: u64,
        expires: u64,
    ) -> Result<String, StoreError> {
        let token = random_secret("rto_");
        let record =
            ApiTokenRecord { operator: operator.to_string(), name: name.to_string(), scope, created: now, expires };
        let added = self.wait(async {
            self.client()
                .await?
                .execute(
                    "INSERT INTO api_tokens (digest, operator, name, record) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (operator, name) DO NOTHING",
                    &[&digest(&token), &operator, &name, &to_json(&record)],
                )
                .await
                .map_err(StoreError::from)
        });
        match added {
            Ok(1) => Ok(token),
            Ok(_) => Err(StoreError::Conflict(format!("{operator:?} already has a token named {name:?}"))),
            Err(StoreError::Postgres(e))
                if e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) =>
            {
                Err(StoreError::Conflict(format!("no operator named {operator:?}")))
            }
            Err(e) => Err(e),
        }
    }

    fn api_tokens(&self, operator: &str) -> Result<Vec<ApiTokenRecord>, StoreError> {
        let rows = self.wait(async {
            self.client()
                .await?
                .query("SELECT record FROM api_tokens WHERE operator = $1 ORDER BY name", &[&operator])
                .await
                .map_err(StoreError::from)
        })?;
        rows.into_iter().map(|r| from_json(r.get(0))).collect()
    }

    fn api_token(&self, token: &str) -> Result<Option<ApiTokenRecord>, StoreError> {
        let presented = digest(token);
        let row = self.wait(async {
            self.client()
                .await?
                .query_opt("SELECT record FROM api_tokens WHERE digest = $1", &[&presented])
                .await
                .map_err(StoreError::from)
        })?;
        row.map(|r| from_json(r.get(0))).transpose()
    }

    fn revoke_api_token(&self, operator: &str, name: &str) -> Result<bool, StoreError> {
        let removed = self.wait(async {
            self.client()
                .await?
                .execute("DELETE FROM api_tokens WHERE operator = $1 AND name = $2", &[&operator, &name])
                .await
                .map_err(StoreError::from)
        })?;
        Ok(removed > 0)
    }

    fn create_session(&self, operator: &str, method: &str, now: u64) -> Result<(String, SessionRecord), StoreError> {
        let id = random_secret("rtsess_");
        let record = SessionRecord {
            operator: operator.to_string(),
            created: now,
            last_used: now,
            csrf: random_secret(""),
            method: method.to_string(),
        };
        self.wait(async {
            self.client()
                .await?
                .execute(
                    "INSERT INTO sessions (digest, operator, record) VALUES ($1, $2, $3)",
                    &[&digest(&id), &operator, &to_json(&record)],
                )
                .await
                .map_err(StoreError::from)
        })?;
        Ok((id, record))
    }

    fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let presented = digest(id);
        let row = self.wait(async {
            self.client()
                .await?
                .query_opt("SELECT record FROM sessions WHERE digest = $1", &[&presented])
                .await
                .map_err(StoreError::from)
        })?;
        row.map(|r| from_json(r.get(0))).transpose()
    }

    fn touch_session(&self, id: &str, now: u64) -> Result<(), StoreError> {
        let presented = digest(id);
        self.wait(async {
            self.client()
                .await?
                .execute(
                    "UPDATE sessions SET record = jsonb_set(record, '{last_used}', to_jsonb($2::bigint))
                     WHERE digest = $1",
                    &[&presented, &super::to_i64(now)],
                )
                .await
                .map_err(StoreError::from)
        })?;
        Ok(())
    }

    fn end_session(&self, id: &str) -> Result<(), StoreError> {
        let presented = digest(id);
        self.wait(async {
            self.client()
                .await?
                .execute("DELETE FROM sessions WHERE digest = $1", &[&presented])
                .await
                .map_err(StoreError::from)
        })?;
        Ok(())
    }

    fn end_sessions(&self, operator: &str) -> Result<usize, StoreError> {
        let ended = self.wait(async {
            self.client()
                .await?
                .execute("DELETE FROM sessions WHERE operator = $1", &[&operator])
                .await
                .map_err(StoreError::from)
        })?;
        Ok(ended as usize)
    }
}
