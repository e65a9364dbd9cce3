"""The gateway: Keycloak login, authorization, the SMS REST API, webhooks and the Prefect proxy."""
