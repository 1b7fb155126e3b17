// Command regcred-nri is regcred's NRI plugin: it connects to the container runtime's NRI
// socket and, at every container creation, asks regcred's node agent (`regcred cri-proxy
// --nri-decisions`) whether the container's pod may use its image. A refusal, an agent
// that does not answer in time, or an agent that is not running fails that one creation;
// nothing else of the node depends on regcred.
//
// It registers as an NRI validator plugin named "regcred": validators run after every
// other plugin, their answer is final, and a validator that errs or times out fails the
// request (a plain NRI plugin that times out is dropped and the container is created).
// The runtime's default validator, with `required_plugins = ["regcred"]`, fails every
// creation while this plugin is not connected, except for pods that carry the toleration
// annotation (regcred's own, the node's system pods).
//
// The rules live in the agent, in Rust, once; this program only carries the question.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/containerd/nri/pkg/stub"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	flags := flag.NewFlagSet("regcred-nri", flag.ContinueOnError)
	nriSocket := flags.String("nri-socket", "/var/run/nri/nri.sock", "the runtime's NRI socket")
	agent := flags.String("agent", "unix:///run/regcred/nri-decisions.sock", "the node agent's decision socket (regcred cri-proxy --nri-decisions)")
	name := flags.String("name", "regcred", "the plugin's name: the one containerd's default validator lists in required_plugins")
	index := flags.String("index", "50", "the plugin's index (two digits; validators run after all other plugins whatever it is)")
	timeout := flags.Duration("timeout", 1800*time.Millisecond, "how long to wait for the agent's answer before refusing; keep it under the runtime's plugin_request_timeout (2s by default)")
	logFormat := flags.String("log-format", "text", "log format: text or json")
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	logger, err := newLogger(*logFormat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "regcred-nri:", err)
		return 2
	}
	client, err := NewAgentClient(*agent, *timeout)
	if err != nil {
		logger.Error("bad --agent", "error", err)
		return 2
	}
	if len(*index) != 2 || (*index)[0] < '0' || (*index)[0] > '9' || (*index)[1] < '0' || (*index)[1] > '9' {
		logger.Error("bad --index: write two digits", "index", *index)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	plugin := &Plugin{agent: client, log: logger}
	logger.Info("regcred-nri starting", "nriSocket", *nriSocket, "agent", *agent, "name", *name, "index", *index, "timeout", timeout.String())
	Connect(ctx, logger, func() (stub.Stub, error) {
		return stub.New(plugin,
			stub.WithPluginName(*name),
			stub.WithPluginIdx(*index),
			stub.WithSocketPath(*nriSocket),
		)
	})
	logger.Info("regcred-nri stopped")
	return 0
}

func newLogger(format string) (*slog.Logger, error) {
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, nil)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, nil)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: write text or json", format)
	}
}

// Connect runs the plugin until ctx ends, connecting again (1 s, doubling to 30 s between
// tries, back to 1 s after a connection that lasted) whenever the runtime closes the
// connection or is not there: a runtime restart does not need the plugin restarted.
func Connect(ctx context.Context, logger *slog.Logger, newStub func() (stub.Stub, error)) {
	const first, most = time.Second, 30 * time.Second
	wait := first
	for ctx.Err() == nil {
		started := time.Now()
		s, err := newStub()
		if err == nil {
			err = s.Run(ctx)
		}
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > most {
			wait = first
		}
		logger.Warn("not connected to the runtime's NRI; connecting again", "error", err, "in", wait.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(wait*2, most)
	}
}
