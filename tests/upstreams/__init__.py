"""Real HTTP servers on loopback that speak the providers' wire formats.

`plugin.py` exposes them as fixtures (`openai_upstream`, `anthropic_upstream`,
`bedrock_upstream`, `refused_url`); `server.py` holds the scripting
machinery they share.
"""
