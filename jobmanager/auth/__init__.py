"""Who may do what: the Permissions List as data, and passwords (argon2id) with the sign-in lock-out."""
