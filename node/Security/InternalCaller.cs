using Microsoft.AspNetCore.Http;

namespace Sequencer.Node.Security;

/// <summary>
/// The member that called an internal route, as its client certificate on the internal listener proves it. Handlers
/// accept a message only in its own sender's name: a member cannot post shares, nonce commitments or DKG messages as
/// another member.
/// </summary>
public static class InternalCaller
{
    private const string Key = "sequencer.internal-caller";

    /// <summary>Records the authenticated member of this request.</summary>
    public static void Set(HttpContext context, int member)
    {
        ArgumentNullException.ThrowIfNull(context);
        context.Items[Key] = member;
    }

    /// <summary>The authenticated member, or null (a node without identities, development only).</summary>
    public static int? Of(HttpContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return context.Items.TryGetValue(Key, out var value) && value is int member ? member : null;
    }

    /// <summary>
    /// Null when the request may speak for <paramref name="claimed"/>; otherwise why not. Without identities every
    /// request may (and the node warned at start that its internal routes are unauthenticated).
    /// </summary>
    public static string? Refusal(HttpContext context, int claimed, bool identities)
    {
        if (!identities)
            return null;
        return Of(context) is { } caller && caller == claimed ? null
            : $"member {Of(context)?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "(none)"} cannot send a message in member {claimed}'s name";
    }
}
