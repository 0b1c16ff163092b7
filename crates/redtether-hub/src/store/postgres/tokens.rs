//! One-time enrollment tokens: a token is used by the single `UPDATE … WHERE used_at IS NULL`
//! that finds it unused, on whichever hub.

use super::super::domain::EnrollTokens;
use super::super::{StoreError, digest, secret};
use super::{PgStore, to_i64, to_u64};
use redtether_proto::wire::EnrollRefusal;

impl EnrollTokens for PgStore {
    fn create_enroll_token(
        &self,
        device_id: &str,
        lifetime_secs: u64,
        group: Option<&str>,
        now: u64,
    ) -> Result<String, StoreError> {
        self.wait(async {
            let token = secret("rte_");
            self.client()
                .await?
                .execute(
                    "INSERT INTO enroll_tokens (digest, device_id, created, expires, device_group)
                     VALUES ($1, $2, $3, $4, $5)",
                    &[&digest(&token), &device_id, &to_i64(now), &to_i64(now.saturating_add(lifetime_secs)), &group],
                )
                .await?;
            Ok(token)
        })
    }

    fn check_enroll_token(&self, token: &str, now: u64) -> Result<Result<String, EnrollRefusal>, StoreError> {
        self.wait(async {
            let row = self
                .client()
                .await?
                .query_opt(
                    "SELECT device_id, expires, used_at IS NOT NULL FROM enroll_tokens WHERE digest = $1",
                    &[&digest(token)],
                )
                .await?;
            let Some(row) = row else { return Ok(Err(EnrollRefusal::UnknownToken)) };
            Ok(if row.get::<_, bool>(2) {
                Err(EnrollRefusal::UsedToken)
            } else if now >= to_u64(row.get(1)) {
                Err(EnrollRefusal::ExpiredToken)
            } else {
                Ok(row.get(0))
            })
        })
    }

    fn enroll_token_group(&self, token: &str) -> Result<Option<String>, StoreError> {
        self.wait(async {
            let row = self
                .client()
                .await?
                .query_opt("SELECT device_group FROM enroll_tokens WHERE digest = $1", &[&digest(token)])
                .await?;
            Ok(row.and_then(|r| r.get(0)))
        })
    }

    fn consume_enroll_token(&self, token: &str) -> Result<bool, StoreError> {
        self.wait(async {
            let used = self
                .client()
                .await?
                .execute(
                    "UPDATE enroll_tokens SET used_at = now() WHERE digest = $1 AND used_at IS NULL",
                    &[&digest(token)],
                )
                .await?;
            Ok(used == 1)
        })
    }

    fn release_enroll_token(&self, token: &str) -> Result<(), StoreError> {
        self.wait(async {
            self.client()
                .await?
                .execute("UPDATE enroll_tokens SET used_at = NULL WHERE digest = $1", &[&digest(token)])
                .await?;
            Ok(())
        })
    }
}
