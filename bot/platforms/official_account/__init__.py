"""The WeChat Official Account (公众号): its webhook, its API client and its delivery rules."""
