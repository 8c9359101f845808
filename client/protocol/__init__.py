"""The realtime wire protocol, defined once and shared by the server and the Python client.

- `chunks`: the binary messages (chunk header + JPEG payload layout, streamed input header)
- `events`: every JSON message in and out, as pydantic models
- `errors`: one exception class per error code, with its HTTP status, OpenAI type and close code

Torch-free (the client SDK installs without torch). docs/PROTOCOL.md is checked against it.
"""
