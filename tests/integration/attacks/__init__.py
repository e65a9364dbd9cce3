"""Attacks on the Prefect proxy, against real Keycloak tokens and a real Prefect server."""
