using System.CommandLine;
using System.Runtime.InteropServices;
using Sequencer.Node.Cli;

// Open stderr now: a node that runs out of file handles must still be able to say why it stops.
Console.Error.Flush();

var root = new RootCommand("sequencer-node: a Raft-replicated, threshold-signed L2 sequencer node.")
{
    RunCommand.Create(),
    DevnetCommand.Create(),
    ClientCommands.CreateSubmit(),
    ClientCommands.CreateStatus(),
    KeyCommands.CreateKeygen(),
    KeyCommands.CreateVerify(),
    CertsCommand.Create(),
    LightCommands.Create(),
    SignTxCommand.Create(),
};
#if SEQUENCER_TEST_FAULTS
root.Subcommands.Add(NonceTortureCommand.Create());
#endif

// Ctrl-C and SIGTERM cancel the verb's token and let it stop cleanly (a node flushes its store, devnet stops
// every node); a second signal is not needed and the process is never cut off after a fixed grace period.
using var stop = new CancellationTokenSource();
void OnSignal(PosixSignalContext context)
{
    context.Cancel = true;
    stop.Cancel();
}

using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
return await root.Parse(args).InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = null }, stop.Token);
