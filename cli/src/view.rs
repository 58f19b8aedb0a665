//! The gateway's window onto a running viewer peer.

use bytes::Bytes;
use meshtv_gateway::{PlaylistEntry, SwarmView};
use meshtv_peer::Peer;
use meshtv_transport::TransportStats;
use std::sync::{Arc, Mutex};

pub struct PeerView {
    pub channel: String,
    pub core: Arc<Mutex<Peer>>,
    pub transport: Arc<TransportStats>,
}

impl SwarmView for PeerView {
    fn channel(&self) -> String {
        self.channel.clone()
    }

    fn playlist(&self) -> Vec<PlaylistEntry> {
        let core = self.core.lock().expect("core lock");
        core.playable()
            .into_iter()
            .map(|(seq, duration_ms)| PlaylistEntry {
                seq,
                duration_ms,
                created_ms: core.header(seq).map(|h| h.created_ms),
            })
            .collect()
    }

    fn target_duration_ms(&self) -> Option<u32> {
        self.core.lock().expect("core lock").descriptor().map(|d| d.segment_duration_ms_target)
    }

    fn segment(&self, seq: u64) -> Option<Bytes> {
        self.core.lock().expect("core lock").segment(seq)
    }

    fn stats(&self) -> serde_json::Value {
        let stats = self.core.lock().expect("core lock").stats(meshtv_transport::now());
        let mut v = serde_json::to_value(stats).unwrap_or_default();
        if let Some(obj) = v.as_object_mut() {
            obj.insert("transport".into(), serde_json::to_value(self.transport.snapshot()).unwrap_or_default());
            obj.insert("connections".into(), serde_json::to_value(self.transport.connections()).unwrap_or_default());
            obj.insert("id".into(), self.core.lock().expect("core lock").id().to_string().into());
        }
        v
    }
}
