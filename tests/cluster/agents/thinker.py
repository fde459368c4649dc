"""One THINK through its kernel connection; prints the answer and stores it (shared scope)."""
import agentos

with agentos.Client() as client:
    reply = client.think("say hello from the worker node")
    print(f"answer: {reply.content}", flush=True)
    client.store("answer", reply.content, scope="shared")
