//! How many devices were online, sampled every few minutes: the fleet overview's chart of the
//! last 24 hours. A week of samples is kept; older ones are dropped as new ones come.

use super::{SledStore, StoreError};

/// Samples older than this are dropped.
const KEEP_SECS: u64 = 7 * 86400;

/// One sample: at `at` (unix seconds), `online` of `total` enrolled devices were connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceSample {
    pub at: u64,
    pub online: u32,
    pub total: u32,
}

impl SledStore {
    fn presence_tree(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree("presence")?)
    }

    /// Records a sample and drops those older than a week.
    pub fn record_presence(&self, sample: PresenceSample) -> Result<(), StoreError> {
        let tree = self.presence_tree()?;
        let mut value = sample.online.to_be_bytes().to_vec();
        value.extend_from_slice(&sample.total.to_be_bytes());
        tree.insert(sample.at.to_be_bytes(), value)?;
        let cutoff = sample.at.saturating_sub(KEEP_SECS).to_be_bytes();
        for old in tree.range(..cutoff).keys() {
            tree.remove(old?)?;
        }
        Ok(())
    }

    /// The samples taken at or after `since`, oldest first.
    pub fn presence_since(&self, since: u64) -> Result<Vec<PresenceSample>, StoreError> {
        let mut samples = Vec::new();
        for entry in self.presence_tree()?.range(since.to_be_bytes()..) {
            let (key, value) = entry?;
            let (Ok(at), Some(online), Some(total)) = (
                <[u8; 8]>::try_from(key.as_ref()).map(u64::from_be_bytes),
                value.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_be_bytes),
                value.get(4..8).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_be_bytes),
            ) else {
                continue;
            };
            samples.push(PresenceSample { at, online, total });
        }
        Ok(samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_back_in_order_and_a_week_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let day = 86400;
        for (i, at) in [day, 2 * day, 9 * day, 9 * day + 300].into_iter().enumerate() {
            store.record_presence(PresenceSample { at, online: i as u32, total: 10 }).unwrap();
        }
        let all = store.presence_since(0).unwrap();
        // Day 2 was exactly a week before day 9 (kept then), and more than a week before the
        // last sample (dropped then); day 1 went first.
        assert_eq!(all.iter().map(|s| s.at).collect::<Vec<_>>(), [9 * day, 9 * day + 300]);
        assert_eq!(
            store.presence_since(9 * day + 1).unwrap(),
            [PresenceSample { at: 9 * day + 300, online: 3, total: 10 }]
        );
    }
}
