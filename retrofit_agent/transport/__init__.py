"""How observations leave the camera: ZeroMQ to local subscribers, HTTPS batches to the fleet.
`protocol` is the wire format that the uploader and every server parse with."""
