"""WeCom (企业微信) self-built app: callbacks, the API client and template cards."""
