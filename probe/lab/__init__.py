"""The censorship lab: a censored network in Linux network namespaces, scenarios as data."""
