"""Kizuna profile-sync: unified customer profiles projected from IDENTITY and CONSENT,
delivered to connectors (webhooks, file exports) only where the customer consented."""
