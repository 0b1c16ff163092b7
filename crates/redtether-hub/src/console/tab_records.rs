//! A device's *Audit* and *SBOM* tabs. The audit tab says whether the device's delivered trail
//! holds together as a hash chain and opens the fleet audit filtered to the device (the same
//! filters, paging and export); the SBOM tab lists the packages with installed and latest
//! version, outdated ones marked, and their licenses, and downloads the CycloneDX document.

use super::device::text;
use super::layout::csrf_field;
use super::seg;
use crate::api::Api;
use crate::caller::Caller;
use crate::sbom_view::packages;
use crate::store::OperatorRole;
use http::{Method, StatusCode};
use maud::{Markup, html};
use redtether_proto::audit::StoredEvent;

/// Whether a device's delivered events form one unbroken hash chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chain {
    Holds {
        events: usize,
    },
    /// An event whose own hash does not match its content.
    Altered {
        seq: u64,
    },
    /// An event that does not follow the one before it.
    Broken {
        seq: u64,
    },
}

/// Checks `events` (in seq order): each one's hash, and each one's link to the one before when
/// their numbers follow each other (a device whose journal was full dropped its oldest events,
/// so the first one held may follow one the hub never got).
pub fn chain(events: &[StoredEvent]) -> Chain {
    let mut previous: Option<&StoredEvent> = None;
    for e in events {
        if !e.hash_holds() {
            return Chain::Altered { seq: e.seq };
        }
        if let Some(p) = previous
            && p.seq + 1 == e.seq
            && p.hash != e.prev_hash
        {
            return Chain::Broken { seq: e.seq };
        }
        previous = Some(e);
    }
    Chain::Holds { events: events.len() }
}

impl Api {
    pub(super) fn device_audit_tab(&self, _caller: &Caller, id: &str) -> Markup {
        let state = self.store.device_audit(id, 0).map(|events| chain(&events));
        let q: String = form_urlencoded::Serializer::new(String::new()).append_pair("device", id).finish();
        html! {
            p #chain {
                @match &state {
                    Ok(Chain::Holds { events }) => { span.state-ok { "Chain verified" } " — " (events) " delivered events, each hash and each link checked." }
                    Ok(Chain::Altered { seq }) => { span.state-bad { "Chain broken" } " — event " (seq) " does not match its hash." }
                    Ok(Chain::Broken { seq }) => { span.state-bad { "Chain broken" } " — event " (seq) " does not follow the one before." }
                    Err(_) => { span.state-bad { "The hub could not read the device's events." } }
                }
            }
            p { a href={ "/audit?" (q) } { "The device's audit trail, with filters and export" } }
        }
    }

    pub(super) async fn sbom_tab(&self, caller: &Caller, id: &str) -> Markup {
        let path = format!("/api/devices/{}/sbom", seg(id));
        let (status, sbom) = self.call(caller, Method::GET, &path, None).await;
        let list = packages(&sbom);
        let outdated = list.iter().filter(|p| p.outdated()).count();
        html! {
            @if caller.operator.role >= OperatorRole::Member {
                form.row method="post" action={ "/console/devices/" (seg(id)) "/sbom" } {
                    (csrf_field(caller))
                    button { "Ask the device for a new SBOM" }
                }
            }
            @if status != StatusCode::OK {
                p.muted { "No SBOM from this device yet." }
            } @else {
                p { (list.len()) " packages, " span.state-warn #outdated-count { (outdated) " outdated" } " · "
                    a href=(path) download="sbom.cdx.json" { "Download CycloneDX" } }
                table #packages {
                    thead { tr { th { "Package" } th { "Installed" } th { "Latest" } th { "Licenses" } } }
                    tbody {
                        @for p in &list {
                            tr.outdated[p.outdated()] {
                                td { (p.name) }
                                td { (p.version) }
                                td { (p.latest.as_deref().unwrap_or("—")) @if p.outdated() { " " span.state-warn { "outdated" } } }
                                td { (p.licenses.join(", ")) }
                            }
                        }
                    }
                }
                p.muted { "Generated " (text(&sbom["metadata"]["timestamp"])) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redtether_proto::audit::{Actor, AuditEvent, AuditKind};

    fn seal(seq: u64, prev: &[u8; 32]) -> StoredEvent {
        let event = AuditEvent::new(AuditKind::NodeRedStarted, Actor::System, "node-red");
        StoredEvent::seal(event, seq, format!("id{seq}"), "2026-12-05T00:00:00Z".into(), prev).0
    }

    fn sealed(n: u64) -> Vec<StoredEvent> {
        let mut prev = [0u8; 32];
        (1..=n)
            .map(|seq| {
                let e = seal(seq, &prev);
                prev = e.hash_bytes();
                e
            })
            .collect()
    }

    #[test]
    fn a_chain_holds_until_an_event_is_altered_or_unlinked() {
        let events = sealed(4);
        assert_eq!(chain(&events), Chain::Holds { events: 4 });
        // The oldest dropped on the device: what is left still holds.
        assert_eq!(chain(&events[2..]), Chain::Holds { events: 2 });
        let mut altered = events.clone();
        altered[1].target = "someone-else".into();
        assert_eq!(chain(&altered), Chain::Altered { seq: 2 });
        // Sealed correctly in itself, but after another event than number 2.
        let mut forged = events.clone();
        forged[2] = seal(3, &[1u8; 32]);
        assert_eq!(chain(&forged), Chain::Broken { seq: 3 });
        let mut gap = events.clone();
        gap.remove(1);
        assert_eq!(chain(&gap), Chain::Holds { events: 3 }, "a gap in numbers is not a broken link");
    }
}
