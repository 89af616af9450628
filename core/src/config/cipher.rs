//! Encrypted values in config (seed 004's `{cipher}`): `password = "{cipher}<base64>"`.
//!
//! AES-256-GCM with a random 96-bit nonce per value; the text after `{cipher}` is the
//! base64 of nonce || ciphertext || tag. The key (32 bytes, base64) comes from the
//! `PAYMESH_CONFIG_KEY` environment variable, or from the file `PAYMESH_CONFIG_KEY_FILE`
//! names; it is never in the config. `cargo xtask secret` makes keys and encrypts values.

use base64::Engine;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// What marks an encrypted value.
pub const PREFIX: &str = "{cipher}";
/// The environment variable holding the key (base64 of 32 bytes).
pub const KEY_ENV: &str = "PAYMESH_CONFIG_KEY";
/// The environment variable naming a file that holds the key.
pub const KEY_FILE_ENV: &str = "PAYMESH_CONFIG_KEY_FILE";

/// A config encryption key.
#[derive(Clone)]
pub struct ConfigKey {
    bytes: [u8; 32],
    /// Where it came from, for messages (never the key itself).
    pub source: String,
}

impl std::fmt::Debug for ConfigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigKey").field("source", &self.source).finish_non_exhaustive()
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl ConfigKey {
    /// A new random key.
    pub fn generate() -> Result<Self, String> {
        let mut bytes = [0u8; 32];
        SystemRandom::new().fill(&mut bytes).map_err(|_| "the system's random source failed".to_owned())?;
        Ok(Self { bytes, source: "a new key".into() })
    }

    /// The key as written in `PAYMESH_CONFIG_KEY` or a key file.
    pub fn encoded(&self) -> String {
        b64().encode(self.bytes)
    }

    pub fn decode(text: &str, source: &str) -> Result<Self, String> {
        let raw = b64().decode(text.trim()).map_err(|_| format!("the key in {source} is not base64"))?;
        let bytes: [u8; 32] =
            raw.try_into().map_err(|_| format!("the key in {source} is not 32 bytes (make one with `cargo xtask secret keygen`)"))?;
        Ok(Self { bytes, source: source.to_owned() })
    }

    /// The key from the environment (`env` looks variables up), if one is set.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        if let Some(text) = env(KEY_ENV) {
            return Self::decode(&text, KEY_ENV).map(Some);
        }
        if let Some(path) = env(KEY_FILE_ENV) {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read the key file {path} ({KEY_FILE_ENV}): {e}"))?;
            return Self::decode(&text, &format!("the key file {path}")).map(Some);
        }
        Ok(None)
    }

    fn sealing(&self) -> LessSafeKey {
        // AES-256 takes any 32-byte key.
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.bytes).expect("a 32-byte AES-256 key"))
    }

    /// `{cipher}<base64>` of `plain`.
    pub fn encrypt(&self, plain: &str) -> Result<String, String> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| "the system's random source failed".to_owned())?;
        let mut data = plain.as_bytes().to_vec();
        self.sealing()
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
            .map_err(|_| "encryption failed".to_owned())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(format!("{PREFIX}{}", b64().encode(out)))
    }

    /// The plain text of a `{cipher}` value. The error never contains the value.
    pub fn decrypt(&self, value: &str) -> Result<String, String> {
        let encoded = value.strip_prefix(PREFIX).ok_or_else(|| format!("is not an encrypted value (it starts with {PREFIX})"))?;
        let raw = b64().decode(encoded.trim()).map_err(|_| "the text after {cipher} is not base64".to_owned())?;
        if raw.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err("the encrypted value is too short to be one".into());
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce".to_owned())?;
        let mut data = sealed.to_vec();
        let plain = self
            .sealing()
            .open_in_place(nonce, Aad::empty(), &mut data)
            .map_err(|_| format!("cannot be decrypted with the key from {}: the key is wrong or the value was changed", self.source))?;
        String::from_utf8(plain.to_vec()).map_err(|_| "the decrypted value is not text".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_a_wrong_key_or_a_changed_value_is_refused() {
        let key = ConfigKey::generate().expect("key");
        let sealed = key.encrypt("s3cret pass").expect("encrypt");
        assert!(sealed.starts_with(PREFIX) && !sealed.contains("s3cret"));
        assert_ne!(sealed, key.encrypt("s3cret pass").expect("again"), "a fresh nonce each time");
        assert_eq!(key.decrypt(&sealed).expect("decrypt"), "s3cret pass");
        let other = ConfigKey::generate().expect("key");
        let e = other.decrypt(&sealed).expect_err("wrong key");
        assert!(e.contains("key is wrong") && !e.contains("s3cret"), "{e}");
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(key.decrypt(&tampered).is_err(), "a changed value must not decrypt");
        assert!(key.decrypt("{cipher}!!").is_err());
        assert!(key.decrypt("plain").is_err());
    }

    #[test]
    fn the_key_comes_from_the_environment_or_a_file_and_bad_keys_say_where() {
        let key = ConfigKey::generate().expect("key");
        let encoded = key.encoded();
        let from_env = ConfigKey::from_env(&|k| (k == KEY_ENV).then(|| encoded.clone())).expect("ok").expect("some");
        assert_eq!(from_env.bytes, key.bytes);
        let path = std::env::temp_dir().join(format!("paymesh-key-{}", std::process::id()));
        std::fs::write(&path, format!("{encoded}\n")).expect("write");
        let p = path.display().to_string();
        let from_file = ConfigKey::from_env(&|k| (k == KEY_FILE_ENV).then(|| p.clone())).expect("ok").expect("some");
        assert_eq!(from_file.bytes, key.bytes);
        assert!(ConfigKey::from_env(&|_| None).expect("ok").is_none());
        let short = ConfigKey::from_env(&|k| (k == KEY_ENV).then(|| "AAAA".to_owned())).expect_err("short");
        assert!(short.contains(KEY_ENV) && short.contains("32 bytes"), "{short}");
    }
}
