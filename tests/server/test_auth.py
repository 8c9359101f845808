"""Auth on: REST needs a Bearer key; the WebSocket needs a minted client token (real uvicorn)."""

import asyncio

from tests.server_harness import connect, http, next_event, send, start_server


def test_auth_on(tmp_path):
    key = {"Authorization": "Bearer sekrit"}
    with start_server(tmp_path, api_keys=["sekrit"], max_running_jobs=0) as srv:
        assert http("GET", srv.url + "/v1/videos")[0] == 401
        assert http("GET", srv.url + "/v1/videos", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert http("GET", srv.url + "/v1/videos", headers=key)[0] == 200
        assert http("GET", srv.url + "/healthz")[0] == 200
        assert http("POST", srv.url + "/v1/realtime/sessions")[0] == 401
        status, minted = http("POST", srv.url + "/v1/realtime/sessions", headers=key)
        assert status == 200 and minted["token"]

        async def scenario():
            for url in (srv.ws_url, srv.ws_url + "?token=forged.token"):
                async with connect(url) as ws:
                    assert (await next_event(ws, "error"))["code"] == "unauthorized"
                    await asyncio.wait_for(ws.wait_closed(), 10)
                    assert ws.close_code == 1008
            async with connect(srv.ws_url + "?token=" + minted["token"]) as ws:
                await send(ws, {"type": "session.start", "prompt": "authorised"})
                assert (await next_event(ws, "session.started"))["model"] == "tiny"
                await send(ws, {"type": "session.stop"})
                await next_event(ws, "session.done")

        asyncio.run(scenario())
