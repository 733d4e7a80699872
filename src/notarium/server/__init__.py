"""The HTTPS data plane, compatible with Azure Confidential Ledger's. The only package importing
the HTTP framework (aiohttp) and the TLS library (pyOpenSSL)."""
