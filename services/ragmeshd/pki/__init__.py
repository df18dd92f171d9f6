"""The mesh CA: certificates, revocation, renewal and the CA passphrase."""
