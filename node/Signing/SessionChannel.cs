using System.Net.Http.Headers;
using System.Text.Json;
using Sequencer.Core.Encoding;
using Sequencer.Node.Configuration;

namespace Sequencer.Node.Signing;

/// <summary>How the leader asks a signer for its shares of a direct session (outside the log).</summary>
public interface ISessionChannel
{
    /// <summary>Asks <paramref name="signer"/>; the answer holds its shares, or the status and reason of a refusal.</summary>
    Task<DirectAnswer> AskAsync(int signer, SessionRequestMessage request, CancellationToken token);
}

/// <summary>
/// The <see cref="ISessionChannel"/> of a node: its own signer in process, the other members over their internal
/// listener (mutual TLS with the consortium's certificates), one request per signer and session.
/// </summary>
public sealed class SessionChannel(NodeOptions options, Func<SignerService?> localSigner, Security.ClusterIdentity? identity = null) : ISessionChannel, IDisposable
{
    /// <summary>The route on every signer.</summary>
    public const string Route = "/internal/v1/sessions";

    /// <summary>The largest answer read (a shares message of a few sessions is a few hundred bytes).</summary>
    public const int MaxAnswerBytes = 64 * 1024;

    private readonly Security.MemberHttpClients http = new(identity, () => new SocketsHttpHandler { PooledConnectionIdleTimeout = TimeSpan.FromSeconds(30), MaxConnectionsPerServer = 16, UseProxy = false },
        client =>
        {
            client.Timeout = Timeout.InfiniteTimeSpan;
            client.MaxResponseContentBufferSize = MaxAnswerBytes;
        });

    /// <inheritdoc/>
    public async Task<DirectAnswer> AskAsync(int signer, SessionRequestMessage request, CancellationToken token)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (signer == options.NodeId)
        {
            return localSigner() is { } local
                ? await local.AnswerDirectAsync(request, token, inProcess: true).ConfigureAwait(false)
                : DirectAnswer.Refuse(409, "not_signing", "this node holds no key share");
        }

        if (options.Members.FirstOrDefault(m => m.Id == signer) is not { } member)
            return DirectAnswer.Refuse(404, "unknown_member", $"member {signer} is not in this node's configuration");
        using var content = new ByteArrayContent(request.Encode());
        content.Headers.ContentType = new MediaTypeHeaderValue("application/x-msgpack");
        try
        {
            using var response = await http.For(signer).PostAsync(new Uri(new Uri(member.InternalBase), Route), content, token).ConfigureAwait(false);
            var body = await response.Content.ReadAsByteArrayAsync(token).ConfigureAwait(false);
            if (!response.IsSuccessStatusCode)
                return DirectAnswer.Refuse((int)response.StatusCode, ErrorCode(body), System.Text.Encoding.UTF8.GetString(body));
            try
            {
                return new DirectAnswer(SignatureSharesMessage.Decode(body), 200, null, null);
            }
            catch (LogFormatException e)
            {
                return DirectAnswer.Refuse(502, "bad_answer", $"member {signer} answered with no shares message: {e.Message}");
            }
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException or OperationCanceledException)
        {
            return DirectAnswer.Refuse(503, "unreachable", token.IsCancellationRequested ? $"member {signer} did not answer in time" : $"member {signer} is unreachable: {e.Message}");
        }
    }

    // The API's error bodies are {"error": code, "message": ...}; anything else has no code.
    private static string ErrorCode(byte[] body)
    {
        try
        {
            using var document = JsonDocument.Parse(body);
            return document.RootElement.ValueKind == JsonValueKind.Object && document.RootElement.TryGetProperty("error", out var error) && error.ValueKind == JsonValueKind.String
                ? error.GetString() ?? "error"
                : "error";
        }
        catch (JsonException)
        {
            return "error";
        }
    }

    /// <inheritdoc/>
    public void Dispose() => http.Dispose();
}
