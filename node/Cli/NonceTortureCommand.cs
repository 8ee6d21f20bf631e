#if SEQUENCER_TEST_FAULTS
using System.CommandLine;
using System.Globalization;
using Sequencer.Core;
using Sequencer.Node.Signing;
using Sequencer.Threshold;

namespace Sequencer.Node.Cli;

/// <summary>
/// TEST BUILD ONLY: <c>nonce-torture</c> drives a signer's nonce store (generate, take, compact, rewrite) until an
/// armed crash point kills the process, printing every sequence it took once the take returned (the moment a share
/// may leave the node); <c>--verify</c> reopens the store and tries to take every sequence listed in a file again.
/// The integration test NonceCrashTests kills it at every step, many times.
/// </summary>
public static class NonceTortureCommand
{
    /// <summary>Builds the verb.</summary>
    public static Command Create()
    {
        var directory = new Option<string>("--dir") { Required = true };
        var crashAt = new Option<string?>("--crash-at");
        var after = new Option<int>("--after") { DefaultValueFactory = _ => 1 };
        var seed = new Option<int>("--seed") { DefaultValueFactory = _ => 1 };
        var verify = new Option<string?>("--verify") { Description = "A file of taken sequences (one per line): exit 0 when none of them can be taken again." };
        var command = new Command("nonce-torture", "TEST BUILD ONLY: crash a nonce store at a named step.") { directory, crashAt, after, seed, verify };
        command.SetAction(result =>
        {
            var path = result.GetValue(directory)!;
            if (result.GetValue(verify) is { } list)
                return Verify(path, list);
            if (result.GetValue(crashAt) is { } point)
                CrashPoints.Arm(point, result.GetValue(after));
            Torture(path, new Random(result.GetValue(seed)));
            return 0;
        });
        return command;
    }

    private static void Torture(string path, Random random)
    {
        var (shares, _) = TrustedDealer.Generate(2, 3);
        using var store = new NonceStore(path);
        for (var round = 0; round < 600; round++)
        {
            if (store.Count < 24)
                store.Generate(1, shares[1], store.NextSequence(1), 48);
            var live = store.CommitmentsFrom(0, 64);
            var wanted = live.OrderBy(_ => random.Next()).Take(random.Next(1, 4))
                .ToDictionary(c => c.Sequence, c => (NonceUse?)new NonceUse((ulong)round + 1, 1, new byte[32], [1, 2], new byte[32]));
            foreach (var sequence in store.Take(1, wanted).Keys)
                Console.Out.WriteLine("taken " + sequence.ToString(CultureInfo.InvariantCulture));
            Console.Out.Flush();
            if (round % 5 == 4)
                store.Compact();
        }
    }

    private static int Verify(string path, string list)
    {
        var taken = File.ReadAllLines(list).Where(l => l.Length > 0).Select(l => ulong.Parse(l, CultureInfo.InvariantCulture)).ToHashSet();
        using var store = new NonceStore(path);
        store.Compact();
        var offered = store.CommitmentsFrom(0, int.MaxValue).Select(c => c.Sequence).Where(taken.Contains).ToList();
        var again = store.Take(1, taken.ToDictionary(s => s, _ => (NonceUse?)null)).Keys.ToList();
        Console.Out.WriteLine($"checked {taken.Count} taken sequences: {offered.Count} offered again, {again.Count} taken again");
        return offered.Count == 0 && again.Count == 0 ? 0 : 1;
    }
}
#endif
