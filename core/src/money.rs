//! Currencies: the ISO 4217 alphabetic codes a payment may use.
//!
//! The table is ISO 4217 list one (as amended through 2025: `XCG` replaces `ANG`, `ZWG`
//! replaces `ZWL`, `SLE` replaces `SLL`) without the codes that are not money a merchant can
//! take: precious metals (`XAU`, `XAG`, `XPD`, `XPT`), bond-market units (`XBA`..`XBD`), `XDR`,
//! `XSU`, `XUA`, and the test and no-currency codes (`XTS`, `XXX`). Amounts are always integer
//! minor units; `minor_units` says how many decimal places the currency has (KRW 0, USD 2,
//! BHD 3) for anyone who formats them.

/// An accepted currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Currency {
    /// Three upper-case letters, e.g. `USD`.
    pub code: &'static str,
    /// Decimal places of the minor unit.
    pub minor_units: u8,
}

/// The largest amount one payment may carry, in major units: one hundred billion
/// (₩100,000,000,000; $100,000,000,000.00). In minor units that is
/// `10^(11 + minor_units)`, at most 10^15 (CLF), so even the sum of 9,000 maximal payments
/// fits an `i64`; every sum of money in Paymesh is still computed in wider or checked
/// arithmetic.
pub const MAX_MAJOR_UNITS: i64 = 100_000_000_000;

impl Currency {
    /// The largest amount one payment may carry, in this currency's minor units.
    pub fn max_amount(&self) -> i64 {
        MAX_MAJOR_UNITS * 10i64.pow(u32::from(self.minor_units))
    }
}

/// Looks up an ISO 4217 code. Codes are matched exactly: `usd` is not `USD`.
pub fn currency(code: &str) -> Option<Currency> {
    CURRENCIES.binary_search_by(|(c, _)| (*c).cmp(code)).ok().map(|i| Currency { code: CURRENCIES[i].0, minor_units: CURRENCIES[i].1 })
}

/// Sorted by code so [`currency`] can binary-search.
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2),
    ("AFN", 2),
    ("ALL", 2),
    ("AMD", 2),
    ("AOA", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("AWG", 2),
    ("AZN", 2),
    ("BAM", 2),
    ("BBD", 2),
    ("BDT", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("BMD", 2),
    ("BND", 2),
    ("BOB", 2),
    ("BOV", 2),
    ("BRL", 2),
    ("BSD", 2),
    ("BTN", 2),
    ("BWP", 2),
    ("BYN", 2),
    ("BZD", 2),
    ("CAD", 2),
    ("CDF", 2),
    ("CHE", 2),
    ("CHF", 2),
    ("CHW", 2),
    ("CLF", 4),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("COU", 2),
    ("CRC", 2),
    ("CUP", 2),
    ("CVE", 2),
    ("CZK", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("DOP", 2),
    ("DZD", 2),
    ("EGP", 2),
    ("ERN", 2),
    ("ETB", 2),
    ("EUR", 2),
    ("FJD", 2),
    ("FKP", 2),
    ("GBP", 2),
    ("GEL", 2),
    ("GHS", 2),
    ("GIP", 2),
    ("GMD", 2),
    ("GNF", 0),
    ("GTQ", 2),
    ("GYD", 2),
    ("HKD", 2),
    ("HNL", 2),
    ("HTG", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("IRR", 2),
    ("ISK", 0),
    ("JMD", 2),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KGS", 2),
    ("KHR", 2),
    ("KMF", 0),
    ("KPW", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("KYD", 2),
    ("KZT", 2),
    ("LAK", 2),
    ("LBP", 2),
    ("LKR", 2),
    ("LRD", 2),
    ("LSL", 2),
    ("LYD", 3),
    ("MAD", 2),
    ("MDL", 2),
    ("MGA", 2),
    ("MKD", 2),
    ("MMK", 2),
    ("MNT", 2),
    ("MOP", 2),
    ("MRU", 2),
    ("MUR", 2),
    ("MVR", 2),
    ("MWK", 2),
    ("MXN", 2),
    ("MXV", 2),
    ("MYR", 2),
    ("MZN", 2),
    ("NAD", 2),
    ("NGN", 2),
    ("NIO", 2),
    ("NOK", 2),
    ("NPR", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PAB", 2),
    ("PEN", 2),
    ("PGK", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("RUB", 2),
    ("RWF", 0),
    ("SAR", 2),
    ("SBD", 2),
    ("SCR", 2),
    ("SDG", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("SHP", 2),
    ("SLE", 2),
    ("SOS", 2),
    ("SRD", 2),
    ("SSP", 2),
    ("STN", 2),
    ("SVC", 2),
    ("SYP", 2),
    ("SZL", 2),
    ("THB", 2),
    ("TJS", 2),
    ("TMT", 2),
    ("TND", 3),
    ("TOP", 2),
    ("TRY", 2),
    ("TTD", 2),
    ("TWD", 2),
    ("TZS", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("USN", 2),
    ("UYI", 0),
    ("UYU", 2),
    ("UYW", 4),
    ("UZS", 2),
    ("VED", 2),
    ("VES", 2),
    ("VND", 0),
    ("VUV", 0),
    ("WST", 2),
    ("XAF", 0),
    ("XCD", 2),
    ("XCG", 2),
    ("XOF", 0),
    ("XPF", 0),
    ("YER", 2),
    ("ZAR", 2),
    ("ZMW", 2),
    ("ZWG", 2),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_unique_and_well_formed() {
        for pair in CURRENCIES.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{} before {}", pair[0].0, pair[1].0);
        }
        for (code, units) in CURRENCIES {
            assert!(code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()), "{code}");
            assert!(*units <= 4, "{code}");
        }
    }

    #[test]
    fn knows_real_codes_and_their_minor_units() {
        assert_eq!(currency("USD").map(|c| c.minor_units), Some(2));
        assert_eq!(currency("KRW").map(|c| c.minor_units), Some(0));
        assert_eq!(currency("JPY").map(|c| c.minor_units), Some(0));
        assert_eq!(currency("BHD").map(|c| c.minor_units), Some(3));
        assert_eq!(currency("EUR").map(|c| c.code), Some("EUR"));
    }

    #[test]
    fn rejects_non_currencies() {
        for bad in ["", "usd", "US", "USDD", "ABC", "XAU", "XXX", "XTS", "ZWL", "HRK", "€"] {
            assert_eq!(currency(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_largest_payment_is_a_hundred_billion_major_units() {
        assert_eq!(currency("KRW").map(|c| c.max_amount()), Some(100_000_000_000));
        assert_eq!(currency("USD").map(|c| c.max_amount()), Some(10_000_000_000_000));
        // The widest currency still leaves room for thousands of maximal payments in an i64.
        let widest = CURRENCIES.iter().map(|(c, _)| currency(c).map_or(0, |c| c.max_amount())).max().unwrap_or(0);
        assert_eq!(widest, 1_000_000_000_000_000);
        assert!(widest.checked_mul(9_000).is_some());
    }
}
