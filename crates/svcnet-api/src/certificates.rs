//! What the certificates svcnet signs share, whoever signs them: the API server for its own components
//! (`svcnet-apiserver`'s `pki`) and the CSR signer (`svcnet-controllers`' `certificates`).

use std::time::Duration;

/// How far before now a new certificate's validity starts. kube's signers backdate by five minutes
/// against clock skew; a short-lived certificate by a tenth of its lifetime at most, so that its renewal
/// time (80 % of the whole) stays ahead.
pub fn backdate(lifetime: Duration) -> Duration {
    Duration::from_secs(300).min(lifetime / 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_minutes_or_a_tenth_of_a_short_lifetime() {
        assert_eq!(
            backdate(Duration::from_secs(365 * 86400)),
            Duration::from_secs(300)
        );
        assert_eq!(backdate(Duration::from_secs(30)), Duration::from_secs(3));
    }
}
