//! Posting alerts to one webhook: a bounded queue (a dead receiver must not grow the hub's
//! memory: the oldest waiting alert is dropped, and that is recorded), one task that posts
//! them in order, each with a bounded number of attempts spaced by [`retry_delay`]. A 2xx
//! answer is delivery; anything else, or no answer within the timeout, is a failed attempt.
//! Every outcome goes into the hub's audit trail (`alert.sent`, `alert.failed`).

use super::body::{audit_detail, audit_target, body};
use super::config::Webhook;
use super::engine::Alert;
use crate::store::HubStore;
use redtether_proto::audit::{Actor, HubEventKind};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Attempts per alert: with the delays below, about a minute when every attempt times out.
pub const ATTEMPTS: u32 = 5;

/// Alerts waiting per webhook before the oldest is dropped.
pub const QUEUE: usize = 256;

/// The wait before attempt `attempt + 1` (after attempt `attempt`, from 1): 1 s doubling, each
/// between half and all of that (`jitter` in [0, 1)), so many hubs' retries do not line up but
/// a retry never comes at once.
pub fn retry_delay(attempt: u32, jitter: f64) -> Duration {
    let full = Duration::from_secs(1) * 2u32.saturating_pow(attempt.saturating_sub(1).min(10));
    full / 2 + full.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
}

/// One notification waiting: the alert and its id (the same on every attempt).
#[derive(Debug, Clone)]
pub struct Job {
    pub alert: Alert,
    pub id: String,
}

/// A webhook's waiting alerts.
#[derive(Default)]
pub struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    ready: tokio::sync::Notify,
}

impl Queue {
    /// Adds `job`; returns the one dropped to make room, if any.
    pub fn push(&self, job: Job) -> Option<Job> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let dropped = if jobs.len() >= QUEUE { jobs.pop_front() } else { None };
        jobs.push_back(job);
        drop(jobs);
        self.ready.notify_one();
        dropped
    }

    async fn pop(&self) -> Job {
        loop {
            if let Some(job) = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).pop_front() {
                return job;
            }
            self.ready.notified().await;
        }
    }
}

/// One webhook's sender.
pub struct Sender {
    pub webhook: Webhook,
    pub client: reqwest::Client,
    pub store: Arc<HubStore>,
    /// How alerts name this hub (`hub` in the body).
    pub hub: String,
    pub queue: Arc<Queue>,
}

/// How one notification ended.
enum Outcome {
    Sent { attempts: u32, status: u16 },
    Failed { attempts: u32, error: String },
}

impl Sender {
    /// Queues `job` (recording the one a full queue dropped).
    pub fn enqueue(&self, job: Job) {
        if let Some(dropped) = self.queue.push(job) {
            tracing::warn!(webhook = %self.webhook.name, alert = %dropped.alert.name, key = %dropped.alert.key, "alert queue full: the oldest alert is dropped");
            self.record(
                &dropped,
                Outcome::Failed { attempts: 0, error: format!("dropped: more than {QUEUE} alerts waiting") },
            );
        }
    }

    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let job = tokio::select! {
                _ = cancel.cancelled() => return,
                job = self.queue.pop() => job,
            };
            let outcome = self.deliver(&job, &cancel).await;
            self.record(&job, outcome);
        }
    }

    async fn deliver(&self, job: &Job, cancel: &CancellationToken) -> Outcome {
        let payload = serde_json::to_vec(&body(&job.alert, &job.id, &self.hub)).expect("a body always encodes");
        let mut error = String::new();
        for attempt in 1..=ATTEMPTS {
            let sent = self
                .client
                .post(self.webhook.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(payload.clone())
                .send()
                .await;
            match sent {
                Ok(answer) if answer.status().is_success() => {
                    return Outcome::Sent { attempts: attempt, status: answer.status().as_u16() };
                }
                Ok(answer) => error = format!("HTTP {}", answer.status()),
                // Without the URL: it may hold the receiver's token.
                Err(e) => error = redtether_host::error_chain(&e.without_url()),
            }
            tracing::debug!(webhook = %self.webhook.name, alert = %job.alert.name, attempt, %error, "alert not delivered yet");
            if attempt < ATTEMPTS {
                tokio::select! {
                    _ = cancel.cancelled() => return Outcome::Failed { attempts: attempt, error: format!("{error}; the hub stopped before the next attempt") },
                    _ = tokio::time::sleep(retry_delay(attempt, rand::random::<f64>())) => {}
                }
            }
        }
        Outcome::Failed { attempts: ATTEMPTS, error }
    }

    fn record(&self, job: &Job, outcome: Outcome) {
        let alert = &job.alert;
        let mut detail = audit_detail(alert, &job.id, &self.webhook.name, &self.webhook.origin());
        let kind = match outcome {
            Outcome::Sent { attempts, status } => {
                tracing::info!(webhook = %self.webhook.name, alert = %alert.name, key = %alert.key, attempts, "alert delivered");
                detail["attempts"] = attempts.into();
                detail["http_status"] = status.into();
                HubEventKind::AlertSent
            }
            Outcome::Failed { attempts, error } => {
                tracing::warn!(webhook = %self.webhook.name, origin = %self.webhook.origin(), alert = %alert.name, key = %alert.key, attempts, %error, "alert not delivered");
                detail["attempts"] = attempts.into();
                detail["error"] = error.into();
                HubEventKind::AlertFailed
            }
        };
        let recorded = match &alert.device {
            Some(device) => self.store.record_event(device, kind, detail).map(|_| ()),
            None => self.store.record(kind, Actor::System, &audit_target(alert), detail).map(|_| ()),
        };
        if let Err(e) = recorded {
            tracing::error!(webhook = %self.webhook.name, %kind, error = %e, "hub event not recorded");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_from_one_second_with_jitter_and_stay_bounded() {
        assert_eq!(retry_delay(1, 0.0), Duration::from_millis(500));
        assert_eq!(retry_delay(1, 0.999_999).as_millis(), 999);
        assert_eq!(retry_delay(2, 0.0), Duration::from_secs(1));
        assert_eq!(retry_delay(4, 1.0), Duration::from_secs(8));
        let worst: Duration = (1..ATTEMPTS).map(|a| retry_delay(a, 1.0)).sum();
        assert_eq!(worst, Duration::from_secs(15), "plus the attempts' timeouts: about a minute at most");
        assert!(retry_delay(u32::MAX, 1.0) <= Duration::from_secs(1024));
    }

    #[test]
    fn a_full_queue_drops_the_oldest() {
        let q = Queue::default();
        let job = |i: usize| Job {
            alert: Alert {
                name: crate::alerts::name::AlertName::HubAuditGap,
                resolved: false,
                key: format!("k{i}"),
                device: None,
                group: None,
                summary: String::new(),
                detail: serde_json::json!({}),
                at: 0,
            },
            id: format!("{i}"),
        };
        for i in 0..QUEUE {
            assert!(q.push(job(i)).is_none());
        }
        assert_eq!(q.push(job(QUEUE)).map(|j| j.id), Some("0".to_string()));
        assert_eq!(q.jobs.lock().unwrap().len(), QUEUE);
    }
}
