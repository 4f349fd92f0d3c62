"""The context tree: domains, subdomains and functionalities clustered from mined documents."""
