//! The `/ring` page, rendered with an auto-escaping template (maud): every value a member
//! gossips (its name above all) is escaped wherever it lands, text or attribute.
//!
//! The forget buttons call `POST /ring/forget/{name}` with `fetch`, sending the admin
//! token typed into the page (kept in the tab's session storage) as a bearer token.

use maud::{html, Markup, DOCTYPE};

use crate::cluster::unix_secs;
use crate::cluster::{ClusterView, Liveness, NodeIdentity, RingReplication};
use crate::ring::{ReplicationFactor, WriteHealth};

const SCRIPT: &str = r#"
const tokenInput = document.getElementById("admin-token");
tokenInput.value = sessionStorage.getItem("ringtail-admin-token") || "";
tokenInput.addEventListener("change", () => sessionStorage.setItem("ringtail-admin-token", tokenInput.value));
for (const button of document.querySelectorAll("button[data-forget]")) {
  button.addEventListener("click", async () => {
    const headers = tokenInput.value ? { "Authorization": "Bearer " + tokenInput.value } : {};
    const resp = await fetch("/ring/forget/" + encodeURIComponent(button.dataset.forget), { method: "POST", headers });
    alert(resp.status + ": " + await resp.text());
    location.reload();
  });
}
"#;

fn forget_button(name: &str) -> Markup {
    html! { button type="button" data-forget=(name) { "forget" } }
}

/// What the page says when writes are not placed on the full replication factor, or
/// not in as many zones as replicas.
fn replication_banner(r: &RingReplication) -> Option<String> {
    match r.writes {
        WriteHealth::Full if r.too_few_zones() => Some(format!(
            "Replicas are placed by zone, but the ACTIVE ingesters are in {} zones for a \
             replication factor of {}: some traces have two replicas in one zone.",
            r.zones, r.factor
        )),
        WriteHealth::Full => None,
        WriteHealth::UnderReplicated => Some(format!(
            "Writing under-replicated: {} ACTIVE ingesters for a replication factor of {}. \
             Each trace goes to every ACTIVE ingester and is acked once {} of them hold it \
             in their WAL.",
            r.active_ingesters, r.factor, r.write_quorum
        )),
        WriteHealth::Refused => Some(format!(
            "Writes are refused: {} ACTIVE ingesters, {} needed (write quorum).",
            r.active_ingesters, r.write_quorum
        )),
    }
}

pub(super) fn render(me: &NodeIdentity, view: &ClusterView, rf: ReplicationFactor) -> Markup {
    let banner = replication_banner(&RingReplication::of(view, rf));
    html! {
        (DOCTYPE)
        html {
            head { title { "Ringtail ring" } }
            body {
                h1 { "Ringtail ring" }
                @if let Some(banner) = &banner {
                    p #replication-banner style="background:#fde68a;padding:6px" { strong { (banner) } }
                }
                p {
                    "Seen from " (me.name) ". " (view.members.len()) " members, "
                    (view.writers.len()) " ingesters in the write ring."
                }
                p {
                    label { "Admin token (for forget): " input #admin-token type="password" autocomplete="off"; }
                }
                table border="1" cellpadding="4" {
                    tr {
                        th { "name" } th { "zone" } th { "roles" } th { "state" } th { "liveness" }
                        th { "gossip" } th { "grpc" } th { "last change (unix s)" } th {}
                    }
                    @for m in &view.members {
                        tr {
                            td { (m.identity.name) }
                            td { (m.identity.zone.as_deref().unwrap_or("")) }
                            td { (m.identity.roles.names().join(", ")) }
                            td { (m.identity.state.as_str()) }
                            td { (if m.liveness == Liveness::Suspect { "SUSPECT" } else { "ALIVE" }) }
                            td { (m.identity.gossip) }
                            td {
                                @if m.identity.is_ingester() { (m.identity.grpc) } @else { "-" }
                            }
                            td { (unix_secs(m.changed_at)) }
                            td { (forget_button(&m.identity.name)) }
                        }
                    }
                }
                h2 { "Absent ingesters" }
                p {
                    "Down without announcing a departure (crashed, cut off). Out of every ring; \
                     listed until they return, are forgotten here, or have been down for \
                     absent_forget_after (every node then forgets them on its own)."
                }
                table border="1" cellpadding="4" {
                    tr {
                        th { "name" } th { "last state" } th { "gossip" } th { "down since (unix s)" } th {}
                    }
                    @for a in &view.absent {
                        tr {
                            td { (a.identity.name) }
                            td { (a.identity.state.as_str()) }
                            td { (a.identity.gossip) }
                            td { (unix_secs(a.since)) }
                            td { (forget_button(&a.identity.name)) }
                        }
                    }
                }
                script { (maud::PreEscaped(SCRIPT)) }
            }
        }
    }
}
