"""``send TO TEXT``: stores TEXT (shared) and mails it to TO; ``receive``: waits for one message,
checks the stored value matches, and prints both."""
import sys

import agentos

with agentos.Client() as client:
    if sys.argv[1] == "send":
        client.store("parcel", sys.argv[3], scope="shared")
        client.send(sys.argv[2], {"text": sys.argv[3]})
        print("sent", flush=True)
    else:
        client.ready()
        message = client.recv(timeout=60, ack=True)
        print(f"mail: {message['body']['text']} from {message['from']}", flush=True)
        print(f"state: {client.fetch('parcel', scope='shared')}", flush=True)
