//! Portable snapshots: deploying a snapshot taken from one device to another with working
//! credentials. This module owns the one step where the hub opens credentials: a portable
//! snapshot carries the device's credentials sealed to the hub's credentials key
//! ([`Credentials::Portable`], made on the device for `Command::PortableSnapshot`), and deploying
//! it opens them with that key and seals them at once to the target device's key
//! ([`Credentials::Sealed`]). The plain credentials exist only in memory, for that moment; the
//! store keeps only the sealed forms.
//!
//! The trust trade-off: the hub can now open snapshot credentials with a key on its disk
//! (`credentials.key` in its state directory, 0600), as the platform we replace keeps a
//! credential secret. Someone with the hub's state directory (or the running hub) can read
//! the credentials of every portable snapshot; a stolen database alone is not enough, since
//! the key is not in it. Credentials deployed directly (`"credentials"` in a deploy request) and
//! snapshots taken the old way stay readable only on their device.
//!
//! Snapshots whose credentials are not portable (Node-RED's file encrypted with the source
//! device's credential secret, or credentials sealed to the source device's key) deploy back to
//! their own device only.

use redtether_proto::deployment::{Credentials, PORTABLE_LABEL};
use redtether_proto::seal::{SealError, seal, unseal};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortableError {
    /// Credentials only the source device can open, for another device.
    #[error(
        "the snapshot's credentials open only on {source_device} (taken before snapshots were portable); \
         take a new snapshot to deploy it to {target_device}"
    )]
    NotPortable { source_device: String, target_device: String },
    /// The portable credentials do not open with the hub's credentials key (sealed to an
    /// earlier key, or damaged).
    #[error("the snapshot's credentials do not open with the hub's credentials key: {0}")]
    Open(SealError),
    /// The opened credentials are not a JSON object.
    #[error("the snapshot's credentials are not a JSON object")]
    NotJson,
    /// The target device's key is unusable.
    #[error("cannot seal the credentials for the device: {0}")]
    Seal(SealError),
}

/// The credentials to deploy to `target_device` (whose public key is `target_spki_der`) from a
/// snapshot taken from `source_device`: `Portable` ones opened with the hub's credentials key
/// (`hub_key_pem`, PKCS#8 PEM) and sealed to the target; others unchanged if the target is the
/// source, else [`PortableError::NotPortable`].
pub fn seal_for_device(
    hub_key_pem: &str,
    credentials: Option<&Credentials>,
    source_device: &str,
    target_device: &str,
    target_spki_der: &[u8],
) -> Result<Option<Credentials>, PortableError> {
    match credentials {
        None => Ok(None),
        Some(Credentials::Portable(sealed)) => {
            let plain = unseal(hub_key_pem, PORTABLE_LABEL, sealed).map_err(PortableError::Open)?;
            if serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&plain).is_err() {
                return Err(PortableError::NotJson);
            }
            let resealed = seal(target_spki_der, target_device, &plain).map_err(PortableError::Seal)?;
            Ok(Some(Credentials::Sealed(resealed)))
        }
        Some(same @ (Credentials::NodeRed(_) | Credentials::Sealed(_))) if source_device == target_device => {
            Ok(Some(same.clone()))
        }
        Some(Credentials::NodeRed(_) | Credentials::Sealed(_)) => Err(PortableError::NotPortable {
            source_device: source_device.to_string(),
            target_device: target_device.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redtether_proto::seal::generate_key;
    use serde_json::json;

    const PLAIN: &[u8] = br#"{"req-call":{"user":"u","password":"correct-horse-battery-staple"}}"#;

    fn portable(hub_spki: &[u8]) -> Credentials {
        Credentials::Portable(seal(hub_spki, PORTABLE_LABEL, PLAIN).unwrap())
    }

    #[test]
    fn portable_credentials_are_sealed_for_the_target_and_open_only_with_its_key() {
        let (hub_pem, hub_spki) = generate_key();
        let (target_pem, target_spki) = generate_key();
        let (other_pem, _) = generate_key();
        let out = seal_for_device(&hub_pem, Some(&portable(&hub_spki)), "dev-a", "prod-b", &target_spki).unwrap();
        let Some(Credentials::Sealed(sealed)) = out else { panic!("{out:?}") };
        assert!(!sealed.contains("correct-horse-battery-staple"));
        assert_eq!(unseal(&target_pem, "prod-b", &sealed).unwrap(), PLAIN, "the target opens the same credentials");
        assert_eq!(unseal(&other_pem, "prod-b", &sealed), Err(SealError::WrongKey), "another device's key does not");
        assert_eq!(unseal(&target_pem, "dev-a", &sealed), Err(SealError::WrongKey), "bound to the target's id");
        assert_eq!(unseal(&hub_pem, PORTABLE_LABEL, &sealed), Err(SealError::WrongKey), "nor the hub's key");
    }

    #[test]
    fn portable_credentials_need_the_hub_key_they_were_sealed_to() {
        let (_, hub_spki) = generate_key();
        let (other_hub_pem, _) = generate_key();
        let (_, target_spki) = generate_key();
        assert_eq!(
            seal_for_device(&other_hub_pem, Some(&portable(&hub_spki)), "dev-a", "prod-b", &target_spki),
            Err(PortableError::Open(SealError::WrongKey))
        );
        let (hub_pem, hub_spki) = generate_key();
        let not_json = Credentials::Portable(seal(&hub_spki, PORTABLE_LABEL, b"[1]").unwrap());
        assert_eq!(
            seal_for_device(&hub_pem, Some(&not_json), "dev-a", "prod-b", &target_spki),
            Err(PortableError::NotJson)
        );
        assert!(matches!(
            seal_for_device(&hub_pem, Some(&portable(&hub_spki)), "dev-a", "prod-b", b"not a key"),
            Err(PortableError::Seal(SealError::Key(_)))
        ));
    }

    #[test]
    fn device_bound_credentials_deploy_back_to_their_device_only() {
        let (hub_pem, _) = generate_key();
        let (_, target_spki) = generate_key();
        let node_red = Credentials::NodeRed(json!({"$": "00ff"}));
        let sealed = Credentials::Sealed("v1.a.b.c".into());
        for creds in [node_red, sealed] {
            assert_eq!(
                seal_for_device(&hub_pem, Some(&creds), "dev-a", "prod-b", &target_spki),
                Err(PortableError::NotPortable { source_device: "dev-a".into(), target_device: "prod-b".into() }),
                "{creds:?} from another device"
            );
            assert_eq!(
                seal_for_device(&hub_pem, Some(&creds), "dev-a", "dev-a", &target_spki),
                Ok(Some(creds.clone())),
                "{creds:?} back to its device, unchanged"
            );
        }
        assert_eq!(seal_for_device(&hub_pem, None, "dev-a", "prod-b", &target_spki), Ok(None));
    }
}
