//! `cargo xtask secret keygen | encrypt | decrypt`: `{cipher}` values for the mesh config.
//!
//! The value is read from standard input (so it stays out of the shell's history and the
//! process list); the key from `PAYMESH_CONFIG_KEY` or the file `PAYMESH_CONFIG_KEY_FILE`.

use std::io::Read;

use paymesh_core::config::cipher::{ConfigKey, KEY_ENV, KEY_FILE_ENV};

pub fn command(args: &[String]) -> Result<(), String> {
    match args {
        [c] if c == "keygen" => {
            println!("{}", ConfigKey::generate()?.encoded());
            eprintln!("keep it out of the repository: export {KEY_ENV}=<it>, or put it in a file (mode 0600) named by {KEY_FILE_ENV}");
            Ok(())
        }
        [c] if c == "encrypt" || c == "decrypt" => {
            let key = ConfigKey::from_env(&|name| std::env::var(name).ok())?
                .ok_or_else(|| format!("set {KEY_ENV} (or {KEY_FILE_ENV}) to the config key; `cargo xtask secret keygen` makes one"))?;
            let mut input = String::new();
            std::io::stdin().read_to_string(&mut input).map_err(|e| format!("cannot read standard input: {e}"))?;
            let value = input.strip_suffix('\n').unwrap_or(&input);
            let out = if c == "encrypt" { key.encrypt(value)? } else { key.decrypt(value)? };
            println!("{out}");
            Ok(())
        }
        _ => Err(format!("usage: cargo xtask secret keygen | encrypt | decrypt (the value on standard input)\n{}", crate::USAGE)),
    }
}
