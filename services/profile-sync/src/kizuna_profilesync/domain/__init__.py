"""The pure core of profile-sync: profile view, projection, connectors, consent gating,
webhook signing, retry policy and export formats. No I/O and no implicit clock here."""
